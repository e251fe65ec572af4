"""Render each Grafana dashboard of grafana/dashboards/ into one PNG, from a
real Prometheus, for people without a Grafana (see scripts/dashboard-preview).

Panels are placed by their gridPos (Grafana's 24-column grid), titled and
labelled with their unit as in the JSON; every target's `expr` is queried
with the same template-variable values tests/dashboards.rs uses. Timeseries
panels are drawn over the window the data covers; stat, gauge and bar-gauge
panels show the last value of each series; heatmaps of histogram buckets
show the distribution over the window. This is a preview of what the queries
return, not a Grafana look-alike: colours and fonts are matplotlib's.
"""

import argparse
import json
import math
import pathlib
import sys
import time
import urllib.parse
import urllib.request

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# Template variables at their "All" values, as tests/dashboards.rs sends them
# (one table for the generator, the test and this preview).
SUBSTITUTIONS = json.loads(
    (pathlib.Path(__file__).resolve().parent.parent / "grafana/generate/variables.json").read_text()
)

ROW_HEIGHT_IN = 0.42  # inches per grid unit of height
WIDTH_IN = 22.0


def substitute(expr):
    for var, value in SUBSTITUTIONS:
        expr = expr.replace(var, value)
    return expr


def api(base, path, params):
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=30) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"{path} {params}: {body.get('error')}")
    return body["data"]["result"]


def legend(fmt, labels, expr):
    if fmt and fmt != "__auto":
        out = fmt
        for k, v in labels.items():
            out = out.replace("{{" + k + "}}", v).replace("{{ " + k + " }}", v)
        return out
    shown = {k: v for k, v in labels.items() if k not in ("job",)}
    return ", ".join(f"{k}={v}" for k, v in sorted(shown.items())) or expr[:40]


def fmt_value(v, unit):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if unit == "percentunit":
        return f"{v * 100:.2f} %"
    if unit == "percent":
        return f"{v:.2f} %"
    if unit == "s":
        if abs(v) < 1e-3:
            return f"{v * 1e6:.0f} µs"
        if abs(v) < 1:
            return f"{v * 1e3:.1f} ms"
        return f"{v:.1f} s"
    if unit in ("bytes", "decbytes"):
        for suffix, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
            if abs(v) >= size:
                return f"{v / size:.1f} {suffix}"
        return f"{v:.0f} B"
    suffix = {"reqps": " req/s", "ops": " ops/s", "wps": " wr/s", "rps": " rd/s"}.get(unit, "")
    if abs(v) >= 1e6:
        return f"{v / 1e6:.2f}M{suffix}"
    if abs(v) >= 1e3:
        return f"{v / 1e3:.1f}k{suffix}"
    return f"{v:.3g}{suffix}"


def le_of(series):
    return float(series["metric"].get("le", "inf"))


def decumulate(series):
    """Histogram `le` series (cumulative) as each bucket's own share, in
    bucket order, as Grafana does for a target whose format is heatmap."""
    ordered = sorted(series, key=le_of)
    out, below = [], 0.0
    for s in ordered:
        v = float(s["value"][1])
        out.append({"metric": s["metric"], "value": [s["value"][0], str(max(v - below, 0.0))]})
        below = v
    return out


def panels_of(dashboard):
    out = []
    for p in dashboard.get("panels", []):
        if p.get("type") == "row":
            out.append(p)
            out.extend(p.get("panels", []))
        else:
            out.append(p)
    return out


def draw_panel(ax, panel, base, start, end, step):
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
    kind = panel.get("type", "timeseries")
    ax.set_title(panel.get("title", ""), fontsize=9, loc="left")
    targets = [t for t in panel.get("targets", []) if t.get("expr")]
    if kind in ("stat", "gauge", "bargauge", "table"):
        names, values = [], []
        for t in targets:
            series = api(base, "/api/v1/query", {"query": substitute(t["expr"]), "time": end})
            if t.get("format") == "heatmap":
                series = decumulate(series)
            for s in series:
                names.append(legend(t.get("legendFormat"), s["metric"], t["expr"]))
                values.append(float(s["value"][1]))
        ax.axis("off")
        if not values:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", color="grey")
        elif len(values) <= 4 and kind != "bargauge":
            for i, (n, v) in enumerate(zip(names, values)):
                y = 0.5 if len(values) == 1 else 0.85 - i * 0.7 / max(len(values) - 1, 1)
                ax.text(0.5, y, fmt_value(v, unit), ha="center", va="center", fontsize=16 if len(values) == 1 else 11)
                if len(values) > 1:
                    ax.text(0.02, y, n[:28], ha="left", va="center", fontsize=6, color="grey")
        else:
            ax.axis("on")
            shown = list(zip(names, values))[:24]
            ax.barh([n[:30] for n, _ in shown], [v for _, v in shown])
            ax.invert_yaxis()
            ax.tick_params(labelsize=6)
            ax.set_xlabel(unit or "", fontsize=7)
        return
    if kind == "heatmap":
        # Buckets over time, as Grafana draws a heatmap of `le` series: each
        # bucket's own count (the cumulative ones differenced), darker = more.
        for t in targets:
            query = {"query": substitute(t["expr"]), "start": start, "end": end, "step": step}
            series = sorted(api(base, "/api/v1/query_range", query), key=lambda s: le_of(s))
            if not series:
                continue
            times = sorted({float(v[0]) for s in series for v in s["values"]})
            index = {x: i for i, x in enumerate(times)}
            rows = []
            for s in series:
                row = [0.0] * len(times)
                for x, v in s["values"]:
                    row[index[float(x)]] = float(v)
                rows.append(row)
            cells = [rows[0]] + [[max(b - a, 0.0) for a, b in zip(lo, hi)] for lo, hi in zip(rows, rows[1:])]
            extent = [times[0] - start, times[-1] - start, 0, len(cells)]
            ax.imshow(cells, aspect="auto", origin="lower", cmap="Oranges", extent=extent, interpolation="nearest")
            ax.set_yticks([i + 0.5 for i in range(len(series))][::2])
            ax.set_yticklabels([legend(t.get("legendFormat"), s["metric"], "") for s in series][::2], fontsize=5)
        ax.tick_params(labelsize=6)
        ax.set_xlabel("seconds", fontsize=6)
        return
    any_data = False
    for t in targets:
        result = api(
            base,
            "/api/v1/query_range",
            {"query": substitute(t["expr"]), "start": start, "end": end, "step": step},
        )
        for s in result[:10]:
            xs = [float(v[0]) - start for v in s["values"]]
            ys = [float(v[1]) for v in s["values"]]
            ax.plot(xs, ys, linewidth=1, label=legend(t.get("legendFormat"), s["metric"], t["expr"])[:40])
            any_data = True
    steps = panel.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {}).get("steps", [])
    for st in steps:
        if st.get("value") is not None and st.get("color") in ("red", "dark-red", "semi-dark-red"):
            ax.axhline(st["value"], color="red", linestyle="--", linewidth=0.8)
    if any_data:
        ax.legend(fontsize=5, loc="upper left")
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", color="grey", transform=ax.transAxes)
    ax.tick_params(labelsize=6)
    ax.set_xlabel("seconds", fontsize=6)
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: fmt_value(v, unit)))


def render(path, base, out_dir, window_s):
    dashboard = json.loads(path.read_text())
    panels = panels_of(dashboard)
    bottom = max((p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels if "gridPos" in p), default=1)
    height = bottom * ROW_HEIGHT_IN + 0.8
    fig = plt.figure(figsize=(WIDTH_IN, height), dpi=80)
    fig.suptitle(f"{dashboard.get('title', path.stem)} (preview from Prometheus)", x=0.01, ha="left")
    end = time.time()
    start = end - window_s
    step = max(1, int(window_s // 240))
    for p in panels:
        g = p.get("gridPos")
        if not g:
            continue
        top = 1 - (0.8 / height) - g["y"] * ROW_HEIGHT_IN / height
        if p.get("type") == "row":
            fig.text(0.005, top - 0.2 / height, p.get("title", ""), fontsize=11, weight="bold")
            continue
        pad_x, pad_y = 0.012, 0.55 / height
        # More room on the left, where the y-axis labels go.
        rect = [
            g["x"] / 24 + 3 * pad_x,
            top - g["h"] * ROW_HEIGHT_IN / height + pad_y * 0.6,
            g["w"] / 24 - 4 * pad_x,
            g["h"] * ROW_HEIGHT_IN / height - pad_y,
        ]
        ax = fig.add_axes(rect)
        try:
            draw_panel(ax, p, base, start, end, step)
        except Exception as e:  # a panel that fails is shown failing, not dropped
            ax.axis("off")
            ax.text(0.5, 0.5, f"query failed: {e}"[:80], ha="center", va="center", color="red", fontsize=7)
    out = out_dir / f"{path.stem}.png"
    fig.savefig(out)
    plt.close(fig)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prometheus", required=True, help="base URL, e.g. http://127.0.0.1:9090")
    ap.add_argument("--out", required=True, type=pathlib.Path)
    ap.add_argument("--dashboards", default="grafana/dashboards", type=pathlib.Path)
    ap.add_argument("--window", default=120, type=int, help="seconds of data drawn (default 120)")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    files = sorted(a.dashboards.glob("*.json"))
    if not files:
        sys.exit(f"no dashboards in {a.dashboards}")
    for f in files:
        print(render(f, a.prometheus.rstrip("/"), a.out, a.window))


if __name__ == "__main__":
    main()
