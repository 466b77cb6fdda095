"""Example of asynchronous invocations with retries and a failure destination.

    fnplane run
    curl -X POST localhost:8080/orders -H 'X-Fnplane-Invocation-Type: Event' \
         -d '{"id": 1, "qty": 3}'        # 202 at once; runs in the background
    curl -X POST localhost:8080/orders -H 'X-Fnplane-Invocation-Type: Event' \
         -d '{"id": 2, "qty": 0}'        # fails 3 times, then a record lands
                                        # in .fnplane/failed-orders/

``fnplane invoke ship_order --async --data '{"id": 3, "qty": 1}'`` queues one
directly; ``place_order`` hands each order on with ``ctx.invoke_async``.
"""

from fnplane import App, FunctionError, HttpRequest

app = App()


@app.http("POST", "/orders")
async def place_order(event: HttpRequest, context):
    """Accept an order and hand it to ``ship_order`` asynchronously."""
    order = event.json()
    request_id = await context.invoke_async("ship_order", order)
    return {"accepted": order["id"], "shipment": request_id}


@app.function(
    retries=2,
    backoff=(0.5, 5),
    max_event_age=3600,
    on_failure="folder:.fnplane/failed-orders",
)
def ship_order(event, context):
    """Ship an order; a quantity of 0 fails every attempt."""
    if event["qty"] <= 0:
        raise FunctionError(f"order {event['id']} has no quantity", "InvalidOrder")
    context.logger.info("order.shipped", order=event["id"], attempt=context.attempt)
    return {"shipped": event["id"]}
