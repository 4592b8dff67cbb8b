"""GCS access against a local emulator (`STORAGE_EMULATOR_HOST`), for tests and local trials.

With the emulator configured, Beam's GCS client still looks up Google credentials first, and
without any it retries for about 20 s in every process. The emulator needs none, so when
`STORAGE_EMULATOR_HOST` is set we tell Beam's credential cache that the lookup is done and found
nothing; its GCS client is then anonymous, which the emulator accepts. Without the variable this
does nothing: real GCS uses the normal credentials. Nothing happens at import: the job calls it
where its processes start their work (`run`, its DoFns' setup) and the tools in their `main`.
"""

from __future__ import annotations

import os

EMULATOR_ENV = "STORAGE_EMULATOR_HOST"


def configure_emulator() -> bool:
    """Skips Beam's credential lookup when an emulator is configured; True if it did."""
    if not os.environ.get(EMULATOR_ENV):
        return False
    try:
        from apache_beam.internal.gcp import auth
    except ImportError:  # Beam without its GCP extra: nothing to configure
        return False
    with auth._Credentials._credentials_lock:
        auth._Credentials._credentials = None
        auth._Credentials._credentials_init = True
    return True
