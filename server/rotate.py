"""``sluice rotate-keys``: re-encrypt every stored secret with the newest key.

Each connector is rewritten in its own transaction, and values already under the newest
key are left alone, so an interrupted run is finished by running it again.
"""

from __future__ import annotations

import attrs

from engine.config import Settings
from engine.crypto import Keyring, is_encrypted, load_keyring
from engine.models import ConnectorSpec
from engine.storage import Database
from engine.storage import connectors as sql


def _rotate(ring: Keyring, spec: ConnectorSpec) -> tuple[ConnectorSpec, int]:
    changed = 0

    def again(field: str, value: str) -> str:
        nonlocal changed
        if is_encrypted(value) and not ring.needs_rotation(value):
            return value
        plain = ring.decrypt(value, spec.connector_id, field) if is_encrypted(value) else value
        changed += 1
        return ring.encrypt(plain, spec.connector_id, field)

    rotated = attrs.evolve(
        spec,
        credentials={k: again(k, v) for k, v in spec.credentials.items()},
        headers={k: again(f"header:{k}", v) for k, v in spec.headers.items()},
        query_params={k: again(f"query:{k}", v) for k, v in spec.query_params.items()},
    )
    return rotated, changed


async def rotate_keys(db: Database, settings: Settings) -> int:
    """Re-encrypt what is not under the newest key; return how many values changed."""
    ring = load_keyring(
        settings.encryption_key,
        settings.encryption_keys,
        embedded=settings.embedded,
        data_dir=settings.data_dir,
    )
    total = 0
    for spec in await db.run(sql.list_connectors):
        rotated, changed = _rotate(ring, spec)
        if changed:
            await db.run(sql.save_secrets, rotated)
            total += changed
    return total
