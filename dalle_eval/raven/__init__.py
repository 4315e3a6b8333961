"""I-RAVEN-style Raven's Progressive Matrices: generation, manifest, rendering and parsing (leaf package).

schema.py holds the data (panels, items, rule semantics, manifest schema), items.py samples items and
reads/writes manifests, render.py draws matrices and reads panels back.
"""

from dalle_eval.raven.items import (
    bisection_candidates,
    generate_item,
    generate_items,
    read_manifest,
    write_manifest,
)
from dalle_eval.raven.render import (
    EXACT_FROM,
    MIN_EXACT_PANEL,
    MIN_RESOLUTION,
    answer_box,
    cell_box,
    distinct_renders,
    nearest_candidate,
    parse_panel,
    render_matrix,
    render_panel,
)
from dalle_eval.raven.schema import (
    CAPTION,
    COLOURS,
    CONFIGS,
    MANIFEST_SCHEMA,
    SIZES,
    TYPES,
    Panel,
    RavenItem,
    row_satisfies,
    satisfies_rules,
    validate_record,
)

__all__ = [
    "CAPTION",
    "COLOURS",
    "CONFIGS",
    "EXACT_FROM",
    "MANIFEST_SCHEMA",
    "MIN_EXACT_PANEL",
    "MIN_RESOLUTION",
    "SIZES",
    "TYPES",
    "Panel",
    "RavenItem",
    "answer_box",
    "bisection_candidates",
    "cell_box",
    "distinct_renders",
    "generate_item",
    "generate_items",
    "nearest_candidate",
    "parse_panel",
    "read_manifest",
    "render_matrix",
    "render_panel",
    "row_satisfies",
    "satisfies_rules",
    "validate_record",
    "write_manifest",
]
