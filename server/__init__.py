"""The WebSocket service: CARFAC frames for many clients from one batched engine.

``create_app`` (``server.app``) builds the FastAPI app; ``carfac-server`` or
``python -m server`` (``server.cli``) serves it with uvicorn. The wire
protocol is ``server.protocol``; the README documents it.
"""
