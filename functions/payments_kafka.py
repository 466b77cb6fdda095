"""Example of the Kafka source, with a dead-letter topic.

Try it with the platform running and Kafka on localhost:9092 (or set
FNPLANE_KAFKA_BOOTSTRAP; `docker compose up kafka` starts one). The topics
are created at start; while no broker answers, the platform runs on and the
consumer keeps trying (`source.kafka_unavailable` in the log):

    kcat -b localhost:9092 -P -t payments <<< '{"id": "p1", "amount_cents": 1250}'
    kcat -b localhost:9092 -P -t payments <<< 'not json'   # retried, dead-lettered
    kcat -b localhost:9092 -C -t payments-dead -f '%h %s\\n' -e   # why, and the record
"""

from fnplane import App, KafkaRecord

app = App()


@app.kafka(
    "payments",
    dead_letter="payments-dead",
    create_topics=True,
    per_record=True,
    retries=2,
    backoff=(0.5, 2),
)
def book_payment(record: KafkaRecord, context):
    """Book one payment; a record that is not a payment fails alone."""
    payment = record.json()
    context.logger.info(
        "payments.booked", id=payment["id"], amount_cents=payment["amount_cents"]
    )
