from basalt import HttpRouter, Response, http_action

from ._wait import wait_for_file

http = HttpRouter()


@http_action
async def block(ctx, request):
    wait_for_file(request.query_params["path"])
    return Response("done")


http.route(path="/block", method="GET", handler=block)
