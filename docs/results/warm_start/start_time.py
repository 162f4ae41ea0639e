"""Server start time, plain against --enable-esamp with no saved base (embedded model)."""
import json
import sys
import tempfile
import time

from sglang_esamp.launch.model_cache import embedded_model_path
from sglang_esamp.launch.server import ServerProcess

embedded_model_path(show_progress=False)
out = {"plain": [], "esamp": []}
for rep in range(int(sys.argv[1])):
    for case, args in (("plain", []), ("esamp", ["--enable-esamp"])):
        env = {"SGLANG_ESAMP_BASE_DIR": tempfile.mkdtemp()}
        t0 = time.monotonic()
        with ServerProcess(args, env=env) as srv:
            out[case].append(round(time.monotonic() - t0, 1))
            if case == "esamp":
                assert "no base distiller saved" in srv.tail(20000)
        print(case, rep, out[case][-1], flush=True)
print(json.dumps(out))
