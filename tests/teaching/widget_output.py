"""What a lesson widget shows, read back for the tests: its Output's text and its controls."""

from __future__ import annotations

from typing import Any


def shown(widget: Any) -> list[str]:
    """The text the widget's Output holds: stdout text and the plain-text form of tables."""
    out = widget.children[-1]
    texts = []
    for item in out.outputs:
        if item["output_type"] == "stream":
            texts.append(item["text"])
        else:
            texts.append(item["data"]["text/plain"])
    return texts


def controls(widget: Any) -> list[Any]:
    """The widget's controls, in order (the row above its Output)."""
    return list(widget.children[0].children)
