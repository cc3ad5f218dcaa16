"""The admission policy of this cluster, from the chart's admission.* values (passed as environment)."""

from __future__ import annotations

import os

from .checks import AdmissionPolicy

PREFIX = "EDGEWEAVE_ADMISSION_"


def policy_from_env(env: dict[str, str] | None = None) -> AdmissionPolicy:
    env = dict(os.environ) if env is None else env
    base = AdmissionPolicy()
    return AdmissionPolicy(
        allowed_images=tuple(p.strip() for p in env.get(PREFIX + "ALLOWED_IMAGES", "").split(",") if p.strip()),
        operator_image=env.get("EDGEWEAVE_IMAGE") or None,
        max_grid_blocks=int(env.get(PREFIX + "MAX_GRID_BLOCKS", base.max_grid_blocks)),
        max_object_bytes=int(env.get(PREFIX + "MAX_OBJECT_BYTES", base.max_object_bytes)),
    )
