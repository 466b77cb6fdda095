"""A workflow example: the credit-line-increase review.

Start it with curl or the CLI (see the README), then read its history:

    curl -X POST localhost:8080/credit-line-increases \\
        -d '{"customer": "ada", "monthly_income": 5200, "requested_increase": 2000}'
    fnplane start-execution CreditLineIncrease --wait \\
        --input '{"customer": "bob", "monthly_income": 900, "requested_increase": 5000}'
"""

import json
import os
import time
from pathlib import Path

from fnplane import App

app = App()

review = app.state_machine(
    "CreditLineIncrease",
    definition=Path(__file__).with_name("credit_line_increase.asl.json"),
)
# Any trigger can start the workflow: here an HTTP route.
app.http("POST", "/credit-line-increases", name="request_credit_line_increase")(
    review.handler
)

# A stand-in for a credit bureau: scores derived from the name, stable per name.
CREDIT_SCORES = {"ada": 780, "bob": 540}


@app.function()
def check_income(event, context):
    """Income must cover the requested increase three times over in a year."""
    yearly = event["monthly_income"] * 12
    return {
        "yearly_income": yearly,
        "sufficient": yearly >= 3 * event["requested_increase"],
    }


@app.function()
def check_credit_score(event, context):
    """Look up the customer's credit score."""
    score = CREDIT_SCORES.get(event["customer"], 650)
    return {"score": score, "good": score >= 620}


@app.function()
def review_application(event, context):
    """The reviewer: approve when both checks pass, and say why."""
    income, credit = event["checks"]
    if not income["sufficient"]:
        return {"approved": False, "reason": "income too low for the increase"}
    if not credit["good"]:
        return {"approved": False, "reason": f"credit score {credit['score']}"}
    return {"approved": True, "reason": "income and credit score both pass"}


@app.function()
def approve_credit_line_increase(event, context):
    return {"status": "approved", "increase": event["requested_increase"]}


@app.function()
def reject_credit_line_increase(event, context):
    return {"status": "rejected", "increase": 0}


@app.function()
def notify_customer(event, context):
    """Write the notice the customer would get into ./notices (or FNPLANE_NOTICES)."""
    folder = Path(os.environ.get("FNPLANE_NOTICES", "notices"))
    folder.mkdir(parents=True, exist_ok=True)
    notice = folder / f"{event['customer']}-{int(time.time() * 1000)}.json"
    notice.write_text(json.dumps(event, indent=2))
    return {"notice": str(notice)}
