"""The one style every figure shares: fonts, colours per model, sizes, caption, saving.

Defined in :mod:`analysis.plot_style` (so that the plots of ``cnzsl landscape`` and
``cnzsl czsl``, which may not import ``figures/``, use the same colours and helpers) and
re-exported here under the names the figure modules use.
"""

from __future__ import annotations

from analysis.plot_style import (
    MODEL_COLORS,
    MODEL_LABELS,
    PNG_DPI,
    add_caption,
    apply_style,
    color,
    label,
    legend_outside,
    log_axis,
    new_figure,
    nice_ticks,
    provenance_caption,
    save_figure,
    shared_colorbar,
    shared_norm,
    text_color,
)

__all__ = ["MODEL_COLORS", "MODEL_LABELS", "PNG_DPI", "add_caption", "apply_style", "color", "label",
           "legend_outside", "log_axis", "new_figure", "nice_ticks", "provenance_caption", "save_figure",
           "shared_colorbar", "shared_norm", "text_color"]
