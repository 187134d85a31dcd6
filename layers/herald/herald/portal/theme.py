"""The portal's accent colour as its pages use it: legible whatever colour a deployment sets.

On the light theme, links are written in the accent on the page and on its panels (the header, notes), and button
text is white on it: all need WCAG 2.2 AA's contrast for text, 4.5:1, of which the panels' background (``PANEL``,
``--panel`` in ``portal.css``), the darkest the accent is written on, is the hardest. A brand colour lighter than
that (``#ffcc00``, 1.5:1 against white) is darkened, mixed with black in the least share that reaches it, rather
than refused: a setting of the portal's looks never stops the API from starting. The dark theme mixes the accent
with white for its links and focus outline (``portal.css``).
"""

from __future__ import annotations

#: WCAG 2.2 AA's least contrast for text.
MIN_CONTRAST = 4.5
#: The light theme's panels (``--panel``): the darkest background the accent is written on.
PANEL = "#f5f5f8"
WHITE = "#ffffff"


def _channels(color: str) -> tuple[int, int, int]:
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


def _luminance(color: str) -> float:
    red, green, blue = (
        c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in (v / 255 for v in _channels(color))
    )
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


def contrast(color: str, background: str = WHITE) -> float:
    """The WCAG contrast ratio of two ``#rrggbb`` colours: (L1 + 0.05) / (L2 + 0.05), L1 the lighter's relative
    luminance."""
    lighter, darker = sorted((_luminance(color), _luminance(background)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


def legible_accent(color: str) -> str:
    """``color`` (``#rrggbb``) when it has ``MIN_CONTRAST`` against ``PANEL`` (and so against white); else the same
    colour mixed with black, in the least share (by hundredths) that reaches it."""
    if contrast(color, PANEL) >= MIN_CONTRAST:
        return color
    channels = _channels(color)
    for hundredths in range(1, 101):
        kept = 1 - hundredths / 100
        darker = "#" + "".join(f"{round(value * kept):02x}" for value in channels)
        if contrast(darker, PANEL) >= MIN_CONTRAST:
            return darker
    return "#000000"  # not reached: black has 19:1 against PANEL
