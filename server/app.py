"""The FastAPI app: its lifespan owns the ``StreamService`` (and so the engine)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from server.protocol import PROTOCOL_VERSION
from server.routes import router
from server.service import StreamService
from server.settings import Settings


def create_app(settings: Settings) -> FastAPI:
  """An app serving ``settings``; the engine starts compiling when the app starts."""
  service = StreamService(settings)

  @contextlib.asynccontextmanager
  async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    service.start()  # compiles on the engine thread: /healthz answers meanwhile
    try:
      yield
    finally:
      await asyncio.to_thread(service.shut_down)

  app = FastAPI(title="carfac-server", version=f"protocol {PROTOCOL_VERSION}", lifespan=lifespan)
  app.state.service = service
  app.include_router(router)
  # The browser page (package data of `client`); GET / redirects to it.
  app.mount("/web", StaticFiles(packages=[("client", "web")], html=True), name="web")
  return app
