"""Example of the file-drop source: drop a CSV into ./inbox and it is summed.

Try it from the repository root:

    fnplane run
    printf 'item,amount\nbook,12.5\npen,1.25\n' > inbox/order.csv

The file moves to inbox/processed/ once handled; a row without an ``amount``
fails the file: it is retried twice, then moves to inbox/failed/ with an
error record beside it.
"""

import csv
import io

from fnplane import App
from fnplane.events.s3 import S3Event

app = App()


# backoff=(1, 5): retries after 0.5-1 s, then 1-2 s, so a bad file reaches
# failed/ within seconds; the default (like Lambda's: 60 s, growing to 5 min)
# suits a dependency that is down for a while, not a demo.
@app.on_file("inbox", patterns=("*.csv",), backoff=(1, 5))
def total_order(event: S3Event, context):
    """Sum the ``amount`` column of a CSV dropped into ./inbox."""
    rows = list(csv.DictReader(io.StringIO(event.read_bytes().decode("utf-8"))))
    total = sum(float(row["amount"]) for row in rows)
    context.logger.info("order.totalled", file=event.key, rows=len(rows), total=total)
    return {"file": event.key, "total": total}
