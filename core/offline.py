"""Nothing leaves this computer: the telemetry of every library dermaseg may load, off before it loads.

Python's socket hooks do not see native code, so each library's own switch is set here, before its first
import (`dermaseg.core` and `dermaseg.webui` call `disable_telemetry()` as they are imported):

- ONNX Runtime (1.32, measured with `strace -f -e trace=network`): without `ORT_DISABLE_TELEMETRY=1` it
  looks up `mobile.events.data.microsoft.com` at start and every 6-8 s, and writes a device id and a
  database under `~/.cache/Microsoft/DeveloperTools/.onnxruntime/`. The variable is read when the library
  loads: `onnxruntime.disable_telemetry_events()` afterwards did not stop the look-ups.
- OpenVINO: `import openvino` imports its model converter, which sends an event to www.google-analytics.com
  through the `openvino-telemetry` package and writes `~/intel/openvino_ga_cid`, unless a consent file
  (`~/intel/openvino_telemetry` holding 0, written by the package's `opt_in_out --opt_out`) says no.
  Rather than rewrite a user-wide file, the package is made unimportable in this process: every import of
  it in OpenVINO is guarded and falls back to OpenVINO's own no-op `tools.ovc.telemetry_stub`. A dict entry,
  free when OpenVINO is absent.
- Gradio and huggingface_hub (a Gradio dependency, which reads its variables once, when imported): analytics
  and version checks off, hub offline.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

TELEMETRY_OFF: Mapping[str, str] = {
    "ORT_DISABLE_TELEMETRY": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_OFFLINE": "1",
}
# Python packages that only report usage; None in sys.modules makes `import` raise ImportError.
TELEMETRY_PACKAGES = ("openvino_telemetry",)
# Libraries whose switch is read when they load: too late once they are in sys.modules.
READ_AT_LOAD = {"onnxruntime": "ORT_DISABLE_TELEMETRY", "huggingface_hub": "HF_HUB_OFFLINE"}

log = logging.getLogger(__name__)


def disable_telemetry() -> None:
    """Switch off every known library's telemetry in this process (the variables also in the processes it starts).

    Idempotent and cheap (a few environment variables and sys.modules entries); overrides values a user
    may have set, since an offline tool has no use for them. Logs a warning for a library already loaded
    before it could be switched off.
    """
    for name, var in READ_AT_LOAD.items():
        if name in sys.modules and os.environ.get(var) != TELEMETRY_OFF[var]:
            log.warning("%s was imported before dermaseg could set %s: its telemetry may be on", name, var)
    os.environ.update(TELEMETRY_OFF)
    for package in TELEMETRY_PACKAGES:
        if sys.modules.get(package) is not None:
            log.warning("%s was imported before dermaseg could block it", package)
        else:
            sys.modules[package] = None  # type: ignore[assignment]
