"""Real processes for the tests, the demo and the benchmark: one copy of each mechanism.

Every process starts on loopback ports (free ones unless the caller pins them), writes its
stdout and stderr to files, is waited for with a bounded timeout and is stopped by its own PID.
This package is part of the repository, not of the ``extauthz`` wheel: ``tests/support``,
``demo/run_demo.py`` and ``benchmarks/bench.py`` build on it, and nothing here imports them.

- :mod:`harness.ports` -- free loopback ports, waiting for a port;
- :mod:`harness.process` -- :class:`ManagedProcess` (start, wait until ready, stop, log tail);
- :mod:`harness.redis` -- :class:`RedisServer`, the one ``redis-server`` launcher;
- :mod:`harness.envoy` -- finding, validating and running Envoy;
- :mod:`harness.extauthz` -- ``extauthz serve``, its CLI and the demo's echo upstream;
- :mod:`harness.stack` -- the front proxy on chosen ports with extauthz and the echo upstream.
- :mod:`harness.nginx` -- nginx running ``deploy/nginx/nginx.conf`` on chosen ports (forward-auth).
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
"""The checkout this package lives in (configs under ``envoy/``, the demo under ``demo/``)."""
