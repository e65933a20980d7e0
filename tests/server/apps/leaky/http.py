from basalt import HttpRouter, http_action

from .leak import SECRET

http = HttpRouter()


@http_action
async def leak(ctx, request):
    print(f"handling with {SECRET}")
    raise ValueError(SECRET)


http.route(path="/leak", method="GET", handler=leak)
