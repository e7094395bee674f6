"""Child process entry: ``python -m benchmarks._child '<json spec>'`` prints one JSON line.

The spec names the contender (``durable``, ``dbos`` or ``raw``), the scenario, the target
database and the parameters. Nothing is shared between children.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from benchmarks._targets import Target


def main(argv: list[str]) -> int:
    spec: dict[str, Any] = json.loads(argv[0])
    target = Target.from_json(spec["target"])
    engine, scenario, params = spec["engine"], spec["scenario"], spec["params"]
    if engine == "durable":
        from benchmarks import _durable as impl
    elif engine == "dbos":
        from benchmarks import _dbos as impl  # type: ignore[no-redef]
    else:
        from benchmarks import _raw as impl  # type: ignore[no-redef]
    profile = spec.get("profile")
    if profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0005)
        profiler.start()
        result = impl.run(scenario, target, params)
        profiler.stop()
        Path(profile + ".txt").write_text(profiler.output_text(show_all=False, short_mode=False))
        Path(profile + ".html").write_text(profiler.output_html())
    else:
        result = impl.run(scenario, target, params)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
