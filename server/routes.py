"""The HTTP and WebSocket routes: thin wrappers around ``StreamService``."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response, WebSocket
from fastapi.responses import JSONResponse, RedirectResponse

from server.connection import Connection
from server.engine_thread import NotReadyError
from server.service import StreamService

router = APIRouter()


def _service(request: Request) -> StreamService:
  return request.app.state.service


@router.get("/", include_in_schema=False)
def page(request: Request) -> RedirectResponse:
  """The browser page (mounted at web/); the query, e.g. ``?token=``, goes along."""
  query = request.url.query
  return RedirectResponse(f"web/?{query}" if query else "web/")


@router.get("/healthz")
def healthz() -> dict[str, str]:
  """Liveness: the process answers."""
  return {"status": "ok"}


@router.get("/readyz")
def readyz(request: Request) -> JSONResponse:
  """Readiness: 200 once the engine is compiled (503 before, and while shutting down)."""
  ready = _service(request).ready
  return JSONResponse({"ready": ready}, status_code=200 if ready else 503)


@router.get("/metrics")
def metrics(request: Request) -> Response:
  """Prometheus text exposition."""
  registry = _service(request).metrics
  return Response(registry.render(), media_type=registry.content_type)


@router.get("/v1/info")
def info(request: Request) -> dict:
  """The model, the protocol and the limits (503 while compiling)."""
  try:
    return _service(request).info()
  except NotReadyError as err:
    raise HTTPException(status_code=503, detail=str(err)) from None


@router.websocket("/v1/stream")
async def stream(websocket: WebSocket) -> None:
  """Protocol v1 (see the README)."""
  await Connection(websocket, websocket.app.state.service).run()
