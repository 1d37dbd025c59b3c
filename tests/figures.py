"""What a drawn matplotlib figure shows, for tests that check nothing of it falls outside the picture."""

from __future__ import annotations


def drawn_texts(fig) -> list:
    """The text a figure shows: its titles, every axes' title, axis labels, tick labels in view, bar labels and
    legend entries (tick labels outside the view exist but are not drawn)."""
    texts = list(fig.texts)
    for legend in [*fig.legends, *(ax.get_legend() for ax in fig.axes)]:
        if legend is not None:
            texts += [legend.get_title(), *legend.get_texts()]
    for ax in fig.axes:
        texts += [ax.title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
        texts += [cell.get_text() for table in ax.tables for cell in table.get_celld().values()]
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            texts += [tick.label1 for tick in [*axis.get_major_ticks(), *axis.get_minor_ticks()]
                      if low <= tick.get_loc() <= high]
    return texts


def texts_outside(fig) -> list[str]:
    """Every piece of text a drawn figure shows, and every legend and table (by its first words), that does not
    lie wholly inside the figure."""
    fig.canvas.draw()
    renderer, box = fig.canvas.get_renderer(), fig.bbox

    def inside(extent) -> bool:
        return (extent.x0 >= box.x0 - 1 and extent.x1 <= box.x1 + 1 and extent.y0 >= box.y0 - 1
                and extent.y1 <= box.y1 + 1)

    outside = [text.get_text() for text in drawn_texts(fig) if text.get_visible() and text.get_text().strip()
               and not inside(text.get_window_extent(renderer))]
    legends = [legend for legend in [*fig.legends, *(ax.get_legend() for ax in fig.axes)] if legend is not None]
    outside += [f"legend {legend.get_texts()[0].get_text()!r}..." for legend in legends
                if not inside(legend.get_window_extent(renderer))]
    outside += [f"table {table[0, 0].get_text().get_text()!r}..." for ax in fig.axes for table in ax.tables
                if not inside(table.get_window_extent(renderer))]
    return outside
