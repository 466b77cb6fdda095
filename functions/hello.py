"""Examples of HTTP functions: a greeting, a JSON echo with a path parameter."""

from fnplane import App, HttpRequest

app = App()


@app.http("GET", "/hello")
def hello(event: HttpRequest, context):
    """Greet the caller: GET /hello?name=Ada."""
    name = event.query.get("name", ["world"])[0]
    return {"message": f"Hello, {name}!", "request_id": context.aws_request_id}


@app.http("POST", "/echo/{tag}")
async def echo(event: HttpRequest, context):
    """Send the JSON body back with the path parameter: POST /echo/demo."""
    return {"tag": event.path_params["tag"], "body": event.json()}
