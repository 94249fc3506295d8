"""The instance folder: the embedded database and, for the demo only, keys generated on first use."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)


def demo_secret(instance_path: str, name: str, make: Callable[[], str]) -> str:
    """Read the secret `name` from the instance folder, generating it (owner-only) the first time.

    Production sets HELPLINE_SECRET_KEY and HELPLINE_ENCRYPTION_KEY instead; this keeps the demo and
    the tests free of any key committed to the repository.
    """
    folder = Path(instance_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if path.exists():
        return path.read_text(encoding="ascii").strip()
    value = make()
    # O_EXCL: two processes starting together must not each write a different key.
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="ascii").strip()
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(value + "\n")
    log.warning("generated %s in %s (set it in the environment for production)", name, folder)
    return value


def random_token() -> str:
    """A random secret for Flask sessions."""
    return secrets.token_urlsafe(48)
