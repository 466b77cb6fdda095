"""Example of the Redis Streams source, with a dead-letter stream.

Try it with the platform running (Redis on localhost:6379, or set
FNPLANE_REDIS_URL):

    redis-cli XADD clicks '*' value '{"page": "/home"}'
    redis-cli XADD clicks '*' value 'not json'     # retried, then dead-lettered
    redis-cli XRANGE clicks-dead - +               # the record, the error, attempts
"""

from collections import Counter

from fnplane import App, RedisBatch

app = App()


@app.redis_stream("clicks", dead_letter="clicks-dead", backoff=(0.5, 2))
def count_clicks(batch: RedisBatch, context):
    """Count page views per page, a batch at a time."""
    pages = Counter(record.json()["page"] for record in batch)
    context.logger.info("clicks.counted", records=len(batch), pages=dict(pages))
    return dict(pages)
