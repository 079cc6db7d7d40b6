"""Profiles: named sets of option values kept in a TOML file.

The file is ``batchrun.toml`` in the working directory, or the one named by
``--config`` (``BATCHRUN_CONFIG``); ``--profile NAME`` (``BATCHRUN_PROFILE``)
chooses a table from it::

    [defaults]
    base_url = "https://gw.example.com"

    [profiles.nightly]
    org = "acme"
    flow = "welcome"
    rate = "20/s"
    concurrency = 64
    columns = ["first_name", "phone"]
    rename = { first = "first_name" }
    set = { campaign = "spring" }
    token_env = "ACME_TOKEN"

Its values become option defaults, ranked below the command line and the
BATCHRUN_* variables and above the built-in defaults. A token never goes in
the file: a profile names the environment variable or the file that holds it.

``loading`` reads and checks the file; ``options`` adds --config and
--profile to click commands and resolves the token a profile names.
"""

from __future__ import annotations

from .loading import CONFIG_FILE, Profile, load_profile
from .options import (
    current_profile,
    profile_default_map,
    profile_options,
    resolve_token,
)

__all__ = [
    "CONFIG_FILE",
    "Profile",
    "current_profile",
    "load_profile",
    "profile_default_map",
    "profile_options",
    "resolve_token",
]
