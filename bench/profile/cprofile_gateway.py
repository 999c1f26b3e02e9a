"""Run the gateway (``vdm server start ...``) under cProfile; dump the stats on exit.

    VDM_PROFILE_OUT=/tmp/gw.prof python bench/profile/cprofile_gateway.py server start --port 8090

Drive it with ``bench/loadgen.py`` and stop it with SIGINT/SIGTERM; read the
dump with ``python -m pstats /tmp/gw.prof`` (``sort tottime``, ``stats 40``).
Not part of the benchmark: profiling slows every call down, so it shows where
the time goes, not how much there is.
"""

from __future__ import annotations

import atexit
import cProfile
import os
import sys

from vdm.cli.main import main

profile = cProfile.Profile()
atexit.register(lambda: profile.dump_stats(os.environ.get("VDM_PROFILE_OUT", "gateway.prof")))
sys.argv = ["vdm", *sys.argv[1:]]
profile.enable()
try:
    main()
finally:
    profile.disable()
