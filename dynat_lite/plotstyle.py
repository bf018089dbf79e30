"""The look every figure of the kit shares: one palette, sizes, and small helpers.

Every student can read the figures:

* One palette, :data:`PALETTE` (Okabe and Ito's eight colours, chosen to stay distinct for the
  common forms of colour blindness), for every figure.
* Right and wrong are blue and orange (:data:`RIGHT`, :data:`WRONG`), never green and red, and
  are also marked by a glyph (:data:`RIGHT_MARK` ✓, :data:`WRONG_MARK` ✗), so they never rest
  on colour alone.
* Each method keeps one colour in every panel and figure (:data:`METHOD_COLORS`: DYNAT is
  always sky blue, PGD-AT orange, ...). Lines also differ by marker shape and bars by fill
  pattern, again tied to the colour.
* Figures are at most :data:`FIG_WIDTH` pixels wide, so they fit a notebook beside JupyterLab's
  file browser, and titles are wrapped to that width instead of being cut off.

The lessons' figures (``viz``) and the studies' (``study_figures``) build on it. It imports
nothing of the package.
"""
from __future__ import annotations

import textwrap
from typing import Sequence

import numpy as np
import plotly.graph_objects as go

# ------------------------------------------------------------------------------------- colours
# Okabe & Ito, "Color Universal Design" (2008), without its yellow (too pale on white).
BLUE = "#0072B2"
VERMILLION = "#D55E00"
PURPLE = "#CC79A7"       # "reddish purple"
SKY = "#56B4E9"
ORANGE = "#E69F00"
GREEN = "#009E73"        # a bluish green: it stays apart from vermillion for red-green blindness
BLACK = "#000000"
GREY = "#999999"         # neutral: chance lines

#: The kit's one palette, in the order in which series without a colour of their own take it.
PALETTE = (BLUE, VERMILLION, PURPLE, SKY, ORANGE, GREEN, BLACK, GREY)

RIGHT = BLUE             # the label (or prediction) agrees with the ground truth ...
WRONG = VERMILLION       # ... or it does not; both also carry a glyph:
RIGHT_MARK = "✓"
WRONG_MARK = "✗"

#: One colour per method (and for the clean, unattacked series) in every panel and figure,
#: none of them RIGHT or WRONG. Chosen so that the series drawn together (clean and the three
#: objectives of lesson 02; standard, PGD-AT, PGD-AT with DYNAT's start and DYNAT of lesson 03;
#: DYNAT and DYNAT with static labels) stay apart for deuteranopia and protanopia. Series names
#: are matched by :func:`method_of`: "CE to ground truth (PGD-AT)" and "pgd_at" are both PGD-AT.
#: PGD-AT with DYNAT's start (``pgd_at_gauss``) and DYNAT with static labels (``dynat_static``)
#: train their targets alike, so they share a colour; black, as the clean series, which is never
#: drawn beside a method.
METHOD_COLORS = {"DYNAT": SKY, "PGD-AT": ORANGE, "TRADES": GREEN, "standard": GREY,
                 "clean": BLACK, "pgd_at_gauss": BLACK, "PGD-AT, DYNAT's start": BLACK,
                 "dynat_static": BLACK, "DYNAT, static labels": BLACK}

# Second, colour-free cues, tied to the colour so that they too stay the same across figures.
SYMBOLS = {BLUE: "circle", VERMILLION: "square", PURPLE: "triangle-down", SKY: "diamond",
           ORANGE: "triangle-up", GREEN: "star", BLACK: "x", GREY: "circle-open"}
PATTERNS = {BLUE: "/", VERMILLION: "x", PURPLE: "|", SKY: ".", ORANGE: "\\", GREEN: "+",
            BLACK: "", GREY: "-"}

# ---------------------------------------------------------------------------------- sizes
FIG_WIDTH = 760          # px: fits a notebook of ~800 px, e.g. beside JupyterLab's file browser
TITLE_SIZE = 16          # px, the title's font
SUBTITLE_SIZE = 12       # px, a title's second and later lines written as <sup>...</sup>
CAPTION_SIZE = 11        # px, image captions
CHAR_EM = 0.6            # a generous average character width, in font sizes, for wrapping
_PAD = 12                # px between the figure's edge and its title
_LINE = 1.3              # plotly's line height, in font sizes


# ------------------------------------------------------------------------------------ helpers
def to_numpy(a) -> np.ndarray:
    """A tensor, array or list as a numpy array (tensors are detached and moved to the CPU)."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def image_uint8(images) -> np.ndarray:
    """Float images in [0, 1], NCHW (or CHW), as uint8 NHWC arrays that ``go.Image`` draws."""
    x = to_numpy(images).astype(np.float32)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"Expected images of shape (N, C, H, W) with C = 1 or 3, got {x.shape}.")
    if x.shape[1] == 1:
        x = np.repeat(x, 3, axis=1)
    return (np.clip(x, 0, 1) * 255).round().astype(np.uint8).transpose(0, 2, 3, 1)


def amplify(delta, eps: float) -> np.ndarray:
    """A perturbation in [-eps, eps] mapped to [0, 1] (grey = 0), so that it can be seen."""
    if eps <= 0:
        raise ValueError(f"eps must be positive to amplify a perturbation, got {eps}.")
    return np.clip(0.5 + 0.5 * to_numpy(delta) / eps, 0, 1)


def mark(right: bool) -> str:
    """The glyph for a right (✓) or wrong (✗) label."""
    return RIGHT_MARK if right else WRONG_MARK


def verdict_color(right: bool) -> str:
    """The colour for a right or wrong label."""
    return RIGHT if right else WRONG


def method_of(name: str) -> str | None:
    """The key of :data:`METHOD_COLORS` a series name is about, or None.

    Tried in turn: the text in the last parentheses ("CE to ground truth (PGD-AT)"), the text
    before them ("clean (no attack)"), the whole name; case, "_" and "-" do not matter.
    """
    name = str(name).strip()
    tries = [name]
    if name.endswith(")") and "(" in name:
        cut = name.rindex("(")
        tries = [name[cut + 1:-1], name[:cut], name]
    keys = {k.lower().replace("_", "-"): k for k in METHOD_COLORS}
    for t in tries:
        key = keys.get(t.strip().lower().replace("_", "-"))
        if key:
            return key
    return None


def series_colors(names: Sequence[str]) -> dict[str, str]:
    """A colour per series: a method's own colour, else the next palette colour that no method
    of the kit uses, then the colours of methods absent from this figure."""
    colors = {n: METHOD_COLORS[m] for n in names if (m := method_of(n))}
    taken = set(colors.values())
    free = [c for c in PALETTE if c not in taken]
    free.sort(key=lambda c: c in METHOD_COLORS.values())  # stable: palette order otherwise
    for i, n in enumerate(n for n in names if n not in colors):
        colors[n] = free[i % len(free)]
    return colors


def _line_style(color: str) -> dict:
    """Line and marker of one series: its colour and the marker shape tied to that colour."""
    return dict(mode="lines+markers", line=dict(color=color, width=2),
                marker=dict(color=color, symbol=SYMBOLS.get(color, "circle"), size=8))


def _bar_style(color: str) -> dict:
    """Bar fill: its colour and the fill pattern tied to that colour."""
    return dict(marker=dict(color=color, line=dict(color=BLACK, width=0.5),
                            pattern=dict(shape=PATTERNS.get(color, ""), fillmode="overlay",
                                         fgcolor="white", size=6)))


def _name(classes: Sequence[str] | None, k: int) -> str:
    return str(classes[k]) if classes is not None and 0 <= k < len(classes) else str(k)


def wrap(text: str, max_chars: int) -> list[str]:
    """``text`` broken at spaces into lines of at most ``max_chars`` characters (a longer word
    keeps its own line). An equation such as "ε = 8/255" stays on one line."""
    glue = "\x00"
    lines = textwrap.wrap(text.replace(" = ", f"{glue}={glue}"), max(int(max_chars), 4),
                          break_long_words=False, break_on_hyphens=False)
    return [line.replace(glue, " ") for line in lines] or [""]


def fit_title(title: str, width: int) -> tuple[str, int]:
    """The title wrapped to a figure ``width`` px wide, and its number of lines.

    ``<br>`` in the title starts a new line; a line written as ``<sup>...</sup>`` is a subtitle,
    wrapped and drawn in a smaller font (as a sized ``<span>``: plotly places a title of several
    ``<sup>`` lines too high and cuts its top).
    """
    lines = []
    for part in str(title).split("<br>"):
        sup = part.startswith("<sup>") and part.endswith("</sup>")
        text = part[5:-6] if sup else part
        size = SUBTITLE_SIZE if sup else TITLE_SIZE
        for line in wrap(text, (width - 2 * _PAD) / (CHAR_EM * size)):
            lines.append(f'<span style="font-size:{SUBTITLE_SIZE}px">{line}</span>' if sup
                         else line)
    return "<br>".join(lines), len(lines)


def _finish(fig: go.Figure, title: str, *, width: int, height: int, left: int = 70,
            right: int = 20, bottom: int = 60, top_extra: int = 10, **layout) -> go.Figure:
    """Title (wrapped, its room reserved above the plot), size, margins and the white template.

    ``height`` is the figure's height below the title; ``top_extra`` the room between the title
    and the plot (e.g. for subplot titles or image captions).
    """
    text, n_lines = fit_title(title, width)
    top = _PAD + int(n_lines * _LINE * TITLE_SIZE) + top_extra
    total = height + top
    fig.update_layout(
        template="plotly_white", width=width, height=total,
        margin=dict(l=left, r=right, t=top, b=bottom),
        # y: the first line's baseline (plotly ignores yanchor for a title of several lines).
        title=dict(text=text, font=dict(size=TITLE_SIZE), xref="container", x=_PAD / width,
                   xanchor="left", yref="container", y=1 - (_PAD + TITLE_SIZE) / total,
                   yanchor="bottom"),
        **layout)
    fig.update_xaxes(automargin=True)
    fig.update_yaxes(automargin=True)
    return fig


def _hide_axes(fig: go.Figure) -> None:
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False)


def _percent_axis(fig: go.Figure, title: str = "accuracy (%)", **where) -> None:
    fig.update_yaxes(title_text=title, range=[0, 101], ticksuffix="%", **where)
