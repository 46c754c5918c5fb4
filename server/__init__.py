"""The WebSocket service: CARFAC frames for many clients from one batched engine.

``create_app`` (``server.app``) builds the FastAPI app; ``carfac-server`` or
``python -m server`` (``server.cli``) serves it with uvicorn. The wire
protocol is ``server.protocol``; the README documents it.

Names used with one meaning each (the wire's names stay protocol v1's):

- ears: a stream's audio channels, one per ear of the model (the start
  message's ``channels`` is ``StreamSpec.ears``); channels, ``n_ch``: the
  model's filter channels (the ready message's ``channels``).
- finish (a stream): its audio is over (the client's ``stop``, or a drain):
  the resampler's tail and a zero-padded last block go to the engine, every
  row is sent, then ``end`` (``StreamSession.finish``, ``BlockFeed.finish``).
  A finishing stream has its last block queued.
- hand over (a stream): instead of finishing, in a drain with a resume key:
  the resampler's tail goes to the engine, unpadded, and the stream's state
  travels in ``end``'s resume token to another replica, which continues it
  (``StreamSession.hand_over``, ``server.resume``).
- flush (a buffer): pushes out the samples it holds
  (``BlockFeed.flush_resampler``; the engine's ``Reblocker`` and
  ``StreamResampler``).
- leave (the engine): a stream gives its pool slot back; its queued blocks
  are dropped and results in flight ignored (``EngineStream.leave``,
  ``StreamSession.leave_engine``), as in ``StreamPool.join``/``leave``.
- end: a stream's output is complete: the ``end`` message, and
  ``Outbox.end`` (no more frame messages: the sender task stops).
- close: a WebSocket's close frame and its close code.
- drain (the server): on SIGTERM, refuse new connections and let every open
  one finish or hand over its stream and close with 1001, within
  ``--shutdown-timeout-s`` (``StreamService.drain``, ``Connection.drain``,
  ``DrainingServer``); the wire calls it ``shutdown`` (``end``'s reason,
  the ``shutting_down`` error).
- shut down (the engine): after the drain, the engine thread ends and queued
  work is dropped (``StreamService.shut_down``, ``Engine.shut_down``).
- stop: only the wire's: the client's ``{"type": "stop"}`` and ``end``'s
  reason ``"stop"``.
"""
