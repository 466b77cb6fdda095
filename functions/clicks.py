"""Example of the Redis Streams source, with a dead-letter stream.

Try it with the platform running (Redis on localhost:6379, or set
FNPLANE_REDIS_URL):

    redis-cli XADD clicks '*' value '{"page": "/home"}'
    redis-cli XADD clicks '*' value 'not json'     # retried, then dead-lettered
    redis-cli XRANGE clicks-dead - +               # the record, the error, attempts
"""

from collections import Counter

from fnplane import App, BatchFailure, RedisBatch

app = App()


@app.redis_stream("clicks", dead_letter="clicks-dead", backoff=(0.5, 2))
def count_clicks(batch: RedisBatch, context):
    """Count page views per page, a batch at a time.

    A record that is not a click fails alone (``BatchFailure``): only it is
    retried and then dead-lettered; the batch's other clicks count once.
    """
    pages, not_clicks = Counter(), []
    for record in batch:
        try:
            pages[record.json()["page"]] += 1
        except (ValueError, KeyError, TypeError):
            not_clicks.append(record)
    context.logger.info("clicks.counted", records=len(batch), pages=dict(pages))
    if not_clicks:
        raise BatchFailure(not_clicks, 'not a click: expected {"page": ...}')
    return dict(pages)
