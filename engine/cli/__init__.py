"""The engine's command-line programs, one module each: ``carfac-nap`` (``nap``) and ``carfac-mic`` (``mic``)."""
