"""The fds Grafana dashboards, built with Grafana's foundation SDK.

    python grafana/generate/dashboards.py --out DIR     write DIR/{overview,rules,model,state}.json
    python grafana/generate/dashboards.py --check DIR   validate the JSON files in DIR

Run through `scripts/dashboards` (which owns the virtualenv with the pinned
SDK, see requirements.txt); the JSON in grafana/dashboards/ is this script's
output and is checked in. Edit this file, never the JSON.

Conventions every panel follows (and `--check` enforces):
- data source: the dashboard variable `datasource` (type datasource, plugin
  prometheus), as `{"type": "prometheus", "uid": "${datasource}"}` on the
  panel and on every target, so the JSON imports into any Grafana;
- every target has an `expr`; every expression selects `instance=~"$instance"`
  and uses only the template variables in TEMPLATE_VARIABLES and only the
  metrics of the contract (METRICS, as in src/metrics.rs);
- every panel has a title, a description and a unit; ids are unique and
  panels do not overlap on Grafana's 24-column grid.
"""

import argparse
import json
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

from grafana_foundation_sdk.builders import bargauge, common, heatmap, stat, statetimeline, timeseries
from grafana_foundation_sdk.builders.dashboard import (
    AnnotationQuery,
    Dashboard,
    DashboardLink,
    DatasourceVariable,
    QueryVariable,
    Row,
    ThresholdsConfig,
)
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import heatmap as hm
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

# --------------------------------------------------------------------------
# What the dashboards may refer to

# The metrics fds exports (src/metrics.rs; tests/dashboards.rs checks every
# query against a real fds). Histograms are read as NAME_bucket / NAME_sum /
# NAME_count.
METRICS = {
    "fds_events_consumed_total", "fds_decisions_total", "fds_decisions_late_total",
    "fds_decisions_redelivered_total", "fds_dead_letter_total", "fds_rule_fired_total",
    "fds_engine_latency_seconds", "fds_decision_age_seconds", "fds_produce_ack_seconds",
    "fds_produce_retries_total", "fds_broker_up", "fds_ready", "fds_offsets_pending",
    "fds_state_entities", "fds_state_bytes", "fds_state_sweeps_total", "fds_state_expired_total",
    "fds_merge_gave_up_total",
    "fds_state_checkpoints_total", "fds_state_local_copies_total",
    "fds_state_checkpoint_pause_seconds", "fds_state_checkpoint_failing", "fds_state_restores_total",
    "fds_state_restore_records_refused_total", "fds_state_restore_seconds",
    "fds_state_restore_bytes", "fds_shared_observations_total", "fds_shared_lag_seconds",
    "fds_rules_reloads_total", "fds_rules_loaded", "fds_model_reloads_total",
    "fds_model_loaded", "fds_model_holds_total", "fds_consumer_lag", "fds_model_score",
    "fds_model_score_psi", "fds_model_info", "fds_ruleset_info", "fds_holds_total",
    "fds_list_entries", "fds_list_entries_expired", "fds_rules_load_seconds",
    "process_cpu_seconds_total", "process_resident_memory_bytes", "process_start_time_seconds",
}
HISTOGRAMS = {
    "fds_engine_latency_seconds", "fds_decision_age_seconds", "fds_produce_ack_seconds",
    "fds_shared_lag_seconds", "fds_model_score",
}

# Every variable an expression may contain, with the value a test substitutes
# for it (the "All" values, and intervals a 1 s scrape fills), longer
# spellings first: grafana/generate/variables.json, which
# tests/dashboards.rs and scripts/dashboard_preview.py read too.
TEMPLATE_VARIABLES = [
    tuple(pair) for pair in json.loads((pathlib.Path(__file__).parent / "variables.json").read_text())
]

DATASOURCE = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
INSTANCE = 'instance=~"$instance"'
RATE = "[$__rate_interval]"
BUDGET_SECONDS = 0.01  # the 10 ms decision budget
TAG = "fds"

# --------------------------------------------------------------------------
# Panel helpers


def query(expr, legend=None, instant=False, fmt=None):
    q = Dataquery().expr(expr).datasource(DATASOURCE)
    if legend:
        q = q.legend_format(legend)
    if instant:
        q = q.instant()
    if fmt:
        q = q.format(fmt)
    return q


def steps(*pairs):
    """Absolute thresholds: steps("green", (0.01, "red")) -> base green, red from 0.01."""
    out = [dm.Threshold(value=None, color=pairs[0])]
    out += [dm.Threshold(value=v, color=c) for v, c in pairs[1:]]
    return ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(out)


def budget_line():
    return steps("green", (BUDGET_SECONDS, "red"))


def finish(panel, title, description, unit, targets, w, h):
    panel = panel.title(title).description(description).datasource(DATASOURCE).unit(unit).span(w).height(h)
    for i, t in enumerate(targets):
        panel = panel.with_target(t.ref_id(chr(ord("A") + i)))
    return panel


def ts(title, description, unit, targets, w=8, h=8, *, thresholds=None, stack=False, bars=False,
       log=False, min_zero=True, overrides=()):
    p = (
        timeseries.Panel()
        .line_width(1)
        .fill_opacity(40 if stack else 10)
        .show_points(cm.VisibilityMode.NEVER)
        .legend(common.VizLegendOptions().display_mode(cm.LegendDisplayMode.LIST).placement(cm.LegendPlacement.BOTTOM).show_legend(True))
        .tooltip(common.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.DESCENDING))
    )
    if min_zero and not log:
        p = p.min(0)
    if stack:
        p = p.stacking(common.StackingConfig().mode(cm.StackingMode.NORMAL))
    if bars:
        p = p.draw_style(cm.GraphDrawStyle.BARS).fill_opacity(80)
    if log:
        p = p.scale_distribution(common.ScaleDistributionConfig().type(cm.ScaleDistribution.LOG).log(10))
    if thresholds is not None:
        p = p.thresholds(thresholds).thresholds_style(
            common.GraphThresholdsStyleConfig().mode(cm.GraphThresholdsStyleMode.DASHED)
        )
    for name, props in overrides:
        p = p.override_by_regexp(name, props)
    return finish(p, title, description, unit, targets, w, h)


def single(title, description, unit, targets, w=3, h=4, *, thresholds=None, text_mode=cm.BigValueTextMode.AUTO,
           graph=True, mappings=None, decimals=None):
    p = (
        stat.Panel()
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .color_mode(cm.BigValueColorMode.VALUE)
        .graph_mode(cm.BigValueGraphMode.AREA if graph else cm.BigValueGraphMode.NONE)
        .text_mode(text_mode)
        .justify_mode(cm.BigValueJustifyMode.AUTO)
        .orientation(cm.VizOrientation.AUTO)
        .thresholds(thresholds if thresholds is not None else steps("blue"))
    )
    if mappings:
        p = p.mappings(mappings)
    if decimals is not None:
        p = p.decimals(decimals)
    return finish(p, title, description, unit, targets, w, h)


def timeline(title, description, targets, w=12, h=5, mappings=None):
    p = (
        statetimeline.Panel()
        .show_value(cm.VisibilityMode.AUTO)
        .merge_values(True)
        .fill_opacity(70)
        .line_width(0)
        .thresholds(steps("green"))
    )
    if mappings:
        p = p.mappings(mappings)
    return finish(p, title, description, "none", targets, w, h)


def up_down(zero, one):
    return [
        dm.ValueMap(options={
            "0": dm.ValueMappingResult(text=zero, color="red", index=0),
            "1": dm.ValueMappingResult(text=one, color="green", index=1),
        })
    ]


def color(fixed):
    """An override property: series matching the regexp drawn in one colour."""
    return [dm.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": fixed})]


def dashed():
    return [dm.DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]})]


def on_right(unit):
    return [
        dm.DynamicConfigValue(id_val="unit", value=unit),
        dm.DynamicConfigValue(id_val="custom.axisPlacement", value="right"),
    ]


def reload_annotation(name, metric, colour):
    return (
        AnnotationQuery()
        .name(name)
        .datasource(DATASOURCE)
        .enable(True)
        .icon_color(colour)
        .expr(f'sum(increase({metric}{{result="applied", {INSTANCE}}}[1m])) > 0')
    )


def base(uid, title, description, refresh="30s"):
    return (
        Dashboard(title)
        .uid(uid)
        .description(description)
        .tags([TAG])
        .editable()
        .time("now-1h", "now")
        .timezone("browser")
        .refresh(refresh)
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .link(
            DashboardLink("fds dashboards")
            .type(dm.DashboardLinkType.DASHBOARDS)
            .tags([TAG])
            .as_dropdown(False)
            .include_vars(True)
            .keep_time(True)
        )
        .with_variable(
            DatasourceVariable("datasource")
            .label("Data source")
            .type("prometheus")
            .description("The Prometheus that scrapes the fds instances (the provisioned one by default).")
        )
        .with_variable(
            QueryVariable("instance")
            .label("Instance")
            .description("fds instances (`fds run`), from the instance label of fds_ready.")
            .datasource(DATASOURCE)
            .query("label_values(fds_ready, instance)")
            .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dm.VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
            .current(dm.VariableOption(selected=True, text=["All"], value=["$__all"]))
        )
        .annotation(reload_annotation("Rule reloads", "fds_rules_reloads_total", "blue"))
        .annotation(reload_annotation("Model reloads", "fds_model_reloads_total", "purple"))
    )


def p99(metric, by="instance", q=0.99):
    """The q-quantile of a histogram, per `by` (comma-separated labels, or "" for all together)."""
    labels = ", ".join([*filter(None, [by]), "le"])
    return f"histogram_quantile({q}, sum by ({labels}) (rate({metric}_bucket{{{INSTANCE}}}{RATE})))"


# --------------------------------------------------------------------------
# Overview: the wall screen (RED: rate, errors, duration; then health)


def overview():
    d = base(
        "fds-overview",
        "fds Overview",
        "The wall screen: transfers in, decisions out, holds, the 10 ms budget, Kafka backlog, "
        "dead letters and each instance's health.",
        refresh="10s",
    ).with_variable(
        QueryVariable("partition")
        .label("Partition")
        .description("Input partitions assigned to the selected instances (fds_consumer_lag).")
        .datasource(DATASOURCE)
        .query(f'label_values(fds_consumer_lag{{{INSTANCE}}}, partition)')
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.NUMERICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(dm.VariableOption(selected=True, text=["All"], value=["$__all"]))
    )
    decisions = f"sum(rate(fds_decisions_total{{{INSTANCE}}}{RATE}))"
    holds = f'sum(rate(fds_decisions_total{{decision="hold", {INSTANCE}}}{RATE}))'

    d = d.with_row(Row("At a glance"))
    d = d.with_panel(single(
        "Decisions/s", "Transfers decided per second, all selected instances (fds_decisions_total).",
        "reqps", [query(decisions)]))
    d = d.with_panel(single(
        "Hold rate", "Share of decisions that hold the transfer for verification.",
        "percentunit", [query(f"{holds} / {decisions}")], decimals=2))
    d = d.with_panel(single(
        "Decision age p99",
        "99th percentile of the time from the transfer's Kafka timestamp to its decision being produced. "
        "Red above the 10 ms budget.",
        "s", [query(p99("fds_decision_age_seconds", by=""))], thresholds=budget_line()))
    d = d.with_panel(single(
        "Engine latency p99", "99th percentile of the rule engine's (and model's) time per transfer. "
        "Red above the 10 ms budget.",
        "s", [query(p99("fds_engine_latency_seconds", by=""))], thresholds=budget_line()))
    d = d.with_panel(single(
        "Max consumer lag", "The largest lag (messages behind the high watermark) of any selected input partition. "
        "Yellow from 1000, where the lag alert starts looking.",
        "short", [query(f'max(fds_consumer_lag{{{INSTANCE}, partition=~"$partition"}})')],
        thresholds=steps("green", (1000, "yellow"), (10000, "red"))))
    d = d.with_panel(single(
        "Dead letters/s", "Messages sent to the dead-letter topic per second, all reasons.",
        "ops", [query(f"sum(rate(fds_dead_letter_total{{{INSTANCE}}}{RATE}))")],
        thresholds=steps("green", (0.01, "yellow"), (1, "red"))))
    d = d.with_panel(single(
        "Late decisions", "Decisions made after the transfer's deadline over the dashboard's time range "
        "(the API already applied its fallback for them).",
        "short", [query(f"sum(increase(fds_decisions_late_total{{{INSTANCE}}}[$__range]))")],
        thresholds=steps("green", (1, "red")), graph=False, decimals=0))
    d = d.with_panel(single(
        "Ready / broker up", "Instances ready to answer transfers (fds_ready) and instances that reach the "
        "Kafka broker (fds_broker_up), of those selected.",
        "short", [query(f"sum(fds_ready{{{INSTANCE}}})", "ready"), query(f"sum(fds_broker_up{{{INSTANCE}}})", "broker up")],
        text_mode=cm.BigValueTextMode.VALUE_AND_NAME, graph=False, decimals=0))

    d = d.with_row(Row("Rate: transfers in, decisions out"))
    d = d.with_panel(ts(
        "Transfers/s in",
        "Messages consumed per second by topic and instance (fds_events_consumed_total): the transfers "
        "topic is the transfers coming in; context events and labels are the other inputs.",
        "ops", [query(f"sum by (instance, topic) (rate(fds_events_consumed_total{{{INSTANCE}}}{RATE}))",
                      "{{topic}} · {{instance}}")]))
    d = d.with_panel(ts(
        "Decisions/s by decision and verification",
        "Decisions per second, stacked: allow, and hold by the verification asked for "
        "(delay, ars, callback).",
        "reqps", [query(f"sum by (decision, verification) (rate(fds_decisions_total{{{INSTANCE}}}{RATE}))",
                        "{{decision}} / {{verification}}")],
        stack=True, overrides=[("allow.*", color("green"))]))
    d = d.with_panel(ts(
        "Hold rate",
        "Share of each instance's decisions that hold the transfer. A jump right after a rule or model "
        "reload (annotations) is what FdsHoldRateJumpAfterReload pages on.",
        "percentunit", [query(
            f'sum by (instance) (rate(fds_decisions_total{{decision="hold", {INSTANCE}}}{RATE}))'
            f" / sum by (instance) (rate(fds_decisions_total{{{INSTANCE}}}{RATE}))", "{{instance}}")]))

    d = d.with_row(Row("Duration: against the 10 ms budget"))
    d = d.with_panel(ts(
        "Decision age p50/p99",
        "End-to-end: from the transfer's Kafka timestamp to its decision being produced, per instance; "
        "the dashed red line is the 10 ms budget (FdsDecisionAgeOverBudget pages on p99 above it for 5 m). "
        "Logarithmic axis.",
        "s", [query(p99("fds_decision_age_seconds", q=0.5), "p50 · {{instance}}"),
              query(p99("fds_decision_age_seconds"), "p99 · {{instance}}")],
        thresholds=budget_line(), log=True, overrides=[("p50.*", dashed())]))
    d = d.with_panel(ts(
        "Engine latency p99",
        "The engine's own time per transfer (rules, lists, model), per instance, against the 10 ms budget. "
        "Engine fast but decision age high: the time goes to waiting (lag, broker, CPU).",
        "s", [query(p99("fds_engine_latency_seconds"), "p99 · {{instance}}")],
        thresholds=budget_line(), log=True))
    d = d.with_panel(ts(
        "Produce ack p99",
        "From producing a decision to the broker's acknowledgement, per instance, against the 10 ms budget.",
        "s", [query(p99("fds_produce_ack_seconds"), "p99 · {{instance}}")],
        thresholds=budget_line(), log=True))

    d = d.with_row(Row("Errors and backlog"))
    d = d.with_panel(ts(
        "Consumer lag per partition",
        "Messages between each input partition's high watermark and the consumer position of the instance "
        "it is assigned to (fds_consumer_lag). Growing on one partition: stuck; on one instance: too slow; "
        "everywhere: input rate.",
        "short", [query(f'max by (instance, topic, partition) (fds_consumer_lag{{{INSTANCE}, partition=~"$partition"}})',
                        "{{topic}}/{{partition}} · {{instance}}")],
        w=8, thresholds=steps("green", (1000, "yellow"))))
    d = d.with_panel(ts(
        "Dead letters by reason",
        "Messages sent to the dead-letter topic per second, by reason (malformed, invalid, wrong_topic, "
        "ahead_of_clock, too_large). Those transfers get no decision.",
        "ops", [query(f"sum by (reason) (rate(fds_dead_letter_total{{{INSTANCE}}}{RATE}))", "{{reason}}")],
        w=6, stack=True))
    d = d.with_panel(ts(
        "Late decisions",
        "Decisions per second made after the transfer's deadline, per instance.",
        "ops", [query(f"sum by (instance) (rate(fds_decisions_late_total{{{INSTANCE}}}{RATE}))", "{{instance}}")],
        w=5, overrides=[(".*", color("red"))]))
    d = d.with_panel(ts(
        "Retries and redeliveries",
        "Produce attempts retried after a failure, and re-delivered transfers answered again, per second.",
        "ops", [query(f"sum by (instance) (rate(fds_produce_retries_total{{{INSTANCE}}}{RATE}))", "retries · {{instance}}"),
                query(f"sum by (instance) (rate(fds_decisions_redelivered_total{{{INSTANCE}}}{RATE}))",
                      "redelivered · {{instance}}")],
        w=5))

    d = d.with_row(Row("Health per instance"))
    d = d.with_panel(timeline(
        "Ready", "1 when the instance is ready to answer transfers (fds_ready, also /readyz).",
        [query(f"max by (instance) (fds_ready{{{INSTANCE}}})", "{{instance}}")],
        mappings=up_down("not ready", "ready")))
    d = d.with_panel(timeline(
        "Broker up", "1 when the instance reaches the Kafka broker (fds_broker_up).",
        [query(f"max by (instance) (fds_broker_up{{{INSTANCE}}})", "{{instance}}")],
        mappings=up_down("down", "up")))
    return d


# --------------------------------------------------------------------------
# Rules


def rules():
    d = base("fds-rules", "fds Rules",
             "Which rules fire, live and in shadow, what share of holds each explains, the rule set in force "
             "and its reloads, and the rules whose firing changed most.")
    fired = f"fds_rule_fired_total{{{INSTANCE}}}"
    live = f'fds_rule_fired_total{{shadow="false", {INSTANCE}}}'

    d = d.with_row(Row("Rule set in force"))
    d = d.with_panel(single(
        "Rule-set version", "The rule set's version in force (fds_ruleset_info) and, as the value, how many "
        "selected instances run it. Two versions: a reload is rolling or one instance rejected it.",
        "short", [query(f"count by (version) (fds_ruleset_info{{{INSTANCE}}})", "{{version}}")],
        w=6, h=5, text_mode=cm.BigValueTextMode.VALUE_AND_NAME, graph=False, decimals=0))
    d = d.with_panel(single(
        "Rules loaded", "Rules in force (live and shadow), per instance (fds_rules_loaded).",
        "short", [query(f"max by (instance) (fds_rules_loaded{{{INSTANCE}}})", "{{instance}}")],
        w=4, h=5, graph=False, decimals=0))
    d = d.with_panel(ts(
        "Reloads (ok / rejected)",
        "Rule directory reloads by result. Rejected: the running rules stay in force and the change is not "
        "live (`fds rules check <dir>` names each problem).",
        "short", [query(f"sum by (result) (increase(fds_rules_reloads_total{{{INSTANCE}}}{RATE}))", "{{result}}")],
        w=14, h=5, bars=True, overrides=[("applied", color("green")), ("rejected", color("red"))]))

    d = d.with_row(Row("Versions over time"))
    d = d.with_panel(timeline(
        "Rule-set version over time", "When each rule-set version was in force on each instance.",
        [query(f"max by (instance, version) (fds_ruleset_info{{{INSTANCE}}})", "{{version}} · {{instance}}")],
        w=24, h=5))

    d = d.with_row(Row("Lists"))
    d = d.with_panel(ts(
        "List entries",
        "Entries of each list in rules/lists/ in force on each instance (fds_list_entries): mule accounts "
        "shared by other banks, blocked devices, trusted payees. A list that shrinks or empties after a "
        "reload deserves a look at the file.",
        "short", [query(f"max by (list) (fds_list_entries{{{INSTANCE}}})", "{{list}}")],
        w=12, h=6))
    d = d.with_panel(ts(
        "Expired entries (to prune)",
        "Entries whose `expires` had passed by the wall clock when the rule set was loaded "
        "(fds_list_entries_expired). They no longer match live transfers (entries are matched by each "
        "transfer's event time) and can be removed from the file.",
        "short", [query(f"max by (list) (fds_list_entries_expired{{{INSTANCE}}})", "{{list}}")],
        w=6, h=6))
    d = d.with_panel(single(
        "Rule-set load time", "How long the rule set in force took to read and compile, lists included "
        "(fds_rules_load_seconds); a list of a million entries loads in about 0.4 s.",
        "s", [query(f"max(fds_rules_load_seconds{{{INSTANCE}}})", "load")],
        w=6, h=6, graph=False))

    d = d.with_row(Row("Fires"))
    d = d.with_panel(ts(
        "Fires per rule",
        "Times each rule fired per second; shadow rules (evaluated, never acting) dashed.",
        "ops", [query(f"sum by (rule, shadow) (rate({fired}{RATE}))", "{{rule}} (shadow={{shadow}})")],
        w=12, h=9, overrides=[(".*shadow=true.*", dashed())]))
    d = d.with_panel(ts(
        "Hold share per rule",
        "Fires of each live rule divided by held transfers: how many holds the rule is part of. Several rules "
        "can fire on one hold and score rules also fire on transfers that are allowed, so the shares need not "
        "add up to 100 %.",
        "percentunit", [query(
            f"sum by (rule) (rate({live}{RATE}))"
            f' / on () group_left () sum(rate(fds_decisions_total{{decision="hold", {INSTANCE}}}{RATE}))', "{{rule}}")],
        w=12, h=9))
    change_now = (
        f"sum by (rule) (rate({live}[15m]))"
        f" / on () group_left () sum(rate(fds_decisions_total{{{INSTANCE}}}[15m]))"
    )
    change_before = (
        f"sum by (rule) (rate({live}[15m] offset 30m))"
        f" / on () group_left () sum(rate(fds_decisions_total{{{INSTANCE}}}[15m] offset 30m))"
    )
    d = d.with_panel(
        finish(
            bargauge.Panel()
            .display_mode(cm.BarGaugeDisplayMode.GRADIENT)
            .orientation(cm.VizOrientation.HORIZONTAL)
            .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
            .show_unfilled(True)
            .thresholds(steps("green", (0.01, "yellow"), (0.05, "red"))),
            "Rule that changed the hold rate most after a reload",
            "The five live rules whose fires per decision changed most between the last 15 minutes and the same "
            "15 minutes half an hour earlier (a rule new or gone since counts from 0), in points of the share of "
            "decisions. After a reload (annotations), the top bar is the rule that moved the hold rate.",
            "percentunit",
            [query(f"topk(5, abs(({change_now} or {change_before} * 0) - ({change_before} or {change_now} * 0)))",
                   "{{rule}}", instant=True)],
            12, 8,
        )
    )
    d = d.with_panel(ts(
        "Hold rate",
        "Share of all selected instances' decisions that hold, with rule and model reloads as annotations.",
        "percentunit", [query(
            f'sum(rate(fds_decisions_total{{decision="hold", {INSTANCE}}}{RATE}))'
            f" / sum(rate(fds_decisions_total{{{INSTANCE}}}{RATE}))", "hold rate")],
        w=12, h=8))
    return d


# --------------------------------------------------------------------------
# Model


def model():
    d = base("fds-model", "fds Model",
             "The model in force, its score distribution and drift against the model card's reference, "
             "model holds against rule holds, and reloads.")
    scores = f"fds_model_score_bucket{{{INSTANCE}}}"

    d = d.with_row(Row("Model in force"))
    d = d.with_panel(single(
        "Model version", "The model's version in force (fds_model_info) and, as the value, how many selected "
        "instances run it. No value: no model, the rules alone decide.",
        "short", [query(f"count by (version) (fds_model_info{{{INSTANCE}}})", "{{version}}")],
        w=6, h=5, text_mode=cm.BigValueTextMode.VALUE_AND_NAME, graph=False, decimals=0))
    d = d.with_panel(single(
        "Model loaded", "Per instance: whether a model scores beside the rules (fds_model_loaded).",
        "none", [query(f"max by (instance) (fds_model_loaded{{{INSTANCE}}})", "{{instance}}")],
        w=4, h=5, graph=False, mappings=up_down("rules only", "scoring"),
        thresholds=steps("red", (1, "green"))))
    d = d.with_panel(ts(
        "Reloads (ok / rejected)",
        "Model directory reloads by result. Rejected: the running model (or none) stays in force "
        "(`fds model show <dir>`).",
        "short", [query(f"sum by (result) (increase(fds_model_reloads_total{{{INSTANCE}}}{RATE}))", "{{result}}")],
        w=14, h=5, bars=True, overrides=[("applied", color("green")), ("rejected", color("red"))]))

    d = d.with_row(Row("Scores and drift"))
    d = d.with_panel(
        finish(
            heatmap.Panel()
            .calculate(False)
            .hide_from(common.HideSeriesConfig().legend(False).tooltip(False).viz(False))
            .scale_distribution(common.ScaleDistributionConfig().type(cm.ScaleDistribution.LINEAR))
            .color(heatmap.HeatmapColorOptions().mode(hm.HeatmapColorMode.SCHEME).scheme("Oranges")
                   .scale(hm.HeatmapColorScale.EXPONENTIAL).exponent(0.5).steps(64))
            .y_axis(heatmap.YAxisConfig().unit("percentunit").axis_label("score"))
            .cell_values(heatmap.CellValues().unit("short"))
            .show_legend()
            .rows_frame(heatmap.RowsHeatmapOptions().layout(cm.HeatmapCellLayout.LE)),
            "Score distribution",
            "Scored transfers per score bin (fds_model_score, 20 bins of 0.05) over time: each column is "
            "one interval, darker is more transfers. A shift upwards is more holds coming.",
            "short",
            [query(f"sum by (le) (increase({scores}{RATE}))", "{{le}}", fmt=PromQueryFormat.HEATMAP)],
            12, 9,
        )
    )
    d = d.with_panel(
        finish(
            bargauge.Panel()
            .display_mode(cm.BarGaugeDisplayMode.BASIC)
            .orientation(cm.VizOrientation.VERTICAL)
            .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
            .thresholds(steps("orange")),
            "Score distribution over the time range",
            "Share of the transfers scored in the dashboard's time range that fell in each score bin, to compare "
            "with the model card's reference histogram (what the PSI measures).",
            "percentunit",
            [query(f"sum by (le) (increase({scores}[$__range]))"
                   f" / on () group_left () sum(increase(fds_model_score_count{{{INSTANCE}}}[$__range]))",
                   "{{le}}", instant=True, fmt=PromQueryFormat.HEATMAP)],
            12, 9,
        )
    )
    d = d.with_panel(ts(
        "Score drift (PSI)",
        "Population stability index of the recent live scores against the model card's reference score "
        "histogram, per instance (0 until enough scores). Below 0.1: stable; 0.1 to 0.25: drifting, watch; "
        "above 0.25: the population changed, the model needs a look.",
        "none", [query(f"max by (instance) (fds_model_score_psi{{{INSTANCE}}})", "{{instance}}")],
        w=12, thresholds=steps("green", (0.1, "yellow"), (0.25, "red"))))
    d = d.with_panel(ts(
        "Mean score",
        "Average model score of the transfers scored, per instance.",
        "percentunit", [query(f"sum by (instance) (rate(fds_model_score_sum{{{INSTANCE}}}{RATE}))"
                              f" / sum by (instance) (rate(fds_model_score_count{{{INSTANCE}}}{RATE}))", "{{instance}}")],
        w=6))
    d = d.with_panel(ts(
        "Scored transfers/s",
        "Transfers the model scored per second, per instance.",
        "ops", [query(f"sum by (instance) (rate(fds_model_score_count{{{INSTANCE}}}{RATE}))", "{{instance}}")],
        w=6))

    d = d.with_row(Row("Holds"))
    d = d.with_panel(ts(
        "Model holds vs. rule holds",
        "Held transfers per second by what held them: the rules, the model, or both (fds_holds_total), "
        "stacked; the line is transfers whose score reached the hold threshold (fds_model_holds_total).",
        "ops", [query(f"sum by (source) (rate(fds_holds_total{{{INSTANCE}}}{RATE}))", "{{source}}"),
                query(f"sum(rate(fds_model_holds_total{{{INSTANCE}}}{RATE}))", "score over threshold")],
        w=12, overrides=[("rules|model|both", [dm.DynamicConfigValue(id_val="custom.stacking", value={"mode": "normal", "group": "A"}),
                                                dm.DynamicConfigValue(id_val="custom.fillOpacity", value=40)])]))
    d = d.with_panel(ts(
        "Share of holds by source",
        "Share of held transfers held by the rules alone, the model alone, or both.",
        "percentunit", [query(f"sum by (source) (rate(fds_holds_total{{{INSTANCE}}}{RATE}))"
                              f" / on () group_left () sum(rate(fds_holds_total{{{INSTANCE}}}{RATE}))", "{{source}}")],
        w=12, stack=True))
    return d


# --------------------------------------------------------------------------
# State and capacity


def state():
    d = base("fds-state", "fds State and capacity",
             "The state each instance holds (entities, bytes), its checkpoints and restores, the shared "
             "payee and device tables, and the process's memory and CPU.")
    owned = "and on (job, instance) fds_ready"  # process_* of fds instances only, not of other jobs

    d = d.with_row(Row("State"))
    d = d.with_panel(ts(
        "Entities by kind",
        "Accounts, payees and devices held in each instance's state (fds_state_entities).",
        "short", [query(f"sum by (instance, kind) (fds_state_entities{{{INSTANCE}}})", "{{kind}} · {{instance}}")],
        w=6))
    d = d.with_panel(ts(
        "State bytes by kind",
        "Estimated bytes of each instance's state, by entity kind (fds_state_bytes).",
        "bytes", [query(f"sum by (instance, kind) (fds_state_bytes{{{INSTANCE}}})", "{{kind}} · {{instance}}")],
        w=6, stack=True))
    d = d.with_panel(ts(
        "Bytes per entity",
        "State bytes divided by the entities held, by kind and instance: what one more account, payee or "
        "device costs (its caps bound it: README \"State and features\").",
        "bytes", [query(f"sum by (instance, kind) (fds_state_bytes{{{INSTANCE}}})"
                        f" / sum by (instance, kind) (fds_state_entities{{{INSTANCE}}})", "{{kind}} · {{instance}}")],
        w=6))
    d = d.with_panel(ts(
        "Sweeps",
        "Idle entities expired per second by the sweeps (several per TTL, by event time), and sweeps run, per "
        "instance. A burst after a gap in the stream is normal; steady expiry is the TTLs at work.",
        "ops", [query(f"sum by (instance) (rate(fds_state_expired_total{{{INSTANCE}}}{RATE}))", "expired · {{instance}}"),
                query(f"sum by (instance) (rate(fds_state_sweeps_total{{{INSTANCE}}}{RATE}))", "sweeps · {{instance}}")],
        w=6))

    d = d.with_row(Row("Checkpoints and restores"))
    d = d.with_panel(ts(
        "Checkpoints and restores by result",
        "State checkpoints to the changelog (written, failed) and state restores at start (restored, empty, "
        "local, stale, refused) per interval; \"checkpoints failing\" is 1 for an instance while its checkpoints "
        "fail or one is overdue (the /readyz warning; alert FdsStateCheckpointsFailing after 15 minutes).",
        "short", [query(
            f'label_replace(sum by (result) (increase(fds_state_checkpoints_total{{{INSTANCE}}}{RATE})), "op", "checkpoint", "", "")'
            f' or label_replace(sum by (result) (increase(fds_state_restores_total{{{INSTANCE}}}{RATE})), "op", "restore", "", "")',
            "{{op}} {{result}}"),
                  query(f"max by (instance) (fds_state_checkpoint_failing{{{INSTANCE}}})",
                        "checkpoints failing · {{instance}}")],
        w=6, bars=True, overrides=[(".*(failed|refused|failing).*", color("red"))]))
    d = d.with_panel(ts(
        "Checkpoint pause",
        "The longest the scoring thread stopped at once for the last state checkpoint, per instance, against "
        "the 10 ms budget: a pause above it delays decisions.",
        "s", [query(f"max by (instance) (fds_state_checkpoint_pause_seconds{{{INSTANCE}}})", "{{instance}}")],
        w=6, thresholds=budget_line()))
    d = d.with_panel(ts(
        "Restore progress",
        "The last state restore of each instance: bytes of the snapshot restored (left axis) and how long it "
        "took (right axis). A restoring instance is not ready.",
        "bytes", [query(f"max by (instance) (fds_state_restore_bytes{{{INSTANCE}}})", "bytes · {{instance}}"),
                  query(f"max by (instance) (fds_state_restore_seconds{{{INSTANCE}}})", "seconds · {{instance}}")],
        w=6, overrides=[("seconds.*", on_right("s"))]))
    d = d.with_panel(ts(
        "Restore records refused",
        "Changelog records a restore could not use, by reason (checksum, format, malformed), per interval.",
        "short", [query(f"sum by (reason) (increase(fds_state_restore_records_refused_total{{{INSTANCE}}}{RATE}))",
                        "{{reason}}")],
        w=6, bars=True))

    d = d.with_row(Row("Shared tables"))
    d = d.with_panel(ts(
        "Shared observations by outcome",
        "Observations of the shared payee and device tables per second: sent by this instance, applied, "
        "skipped or refused from the others.",
        "ops", [query(f"sum by (outcome) (rate(fds_shared_observations_total{{{INSTANCE}}}{RATE}))", "{{outcome}}")]))
    d = d.with_panel(ts(
        "Shared observation lag p50/p99",
        "From another instance producing an observation to it being counted here, per instance.",
        "s", [query(p99("fds_shared_lag_seconds", q=0.5), "p50 · {{instance}}"),
              query(p99("fds_shared_lag_seconds"), "p99 · {{instance}}")],
        log=True, overrides=[("p50.*", dashed())]))
    d = d.with_panel(ts(
        "Merge gave up",
        "Times per second the scoring thread stopped waiting for a merge of the state, per instance.",
        "ops", [query(f"sum by (instance) (rate(fds_merge_gave_up_total{{{INSTANCE}}}{RATE}))", "{{instance}}")]))

    d = d.with_row(Row("Process"))
    d = d.with_panel(ts(
        "Resident memory",
        "Resident set size of each fds process (process_resident_memory_bytes).",
        "bytes", [query(f"process_resident_memory_bytes{{{INSTANCE}}} {owned}", "{{instance}}")], w=6))
    d = d.with_panel(ts(
        "CPU",
        "CPU time used per second by each fds process; 100 % is one core.",
        "percentunit", [query(f"rate(process_cpu_seconds_total{{{INSTANCE}}}{RATE}) {owned}", "{{instance}}")], w=6))
    d = d.with_panel(ts(
        "Offsets pending commit",
        "Consumed offsets decided but not yet committed, per instance (fds_offsets_pending).",
        "short", [query(f"max by (instance) (fds_offsets_pending{{{INSTANCE}}})", "{{instance}}")], w=6))
    d = d.with_panel(single(
        "Uptime", "Time since each fds process started (process_start_time_seconds).",
        "s", [query(f"time() - (process_start_time_seconds{{{INSTANCE}}} {owned})", "{{instance}}")],
        w=6, h=8, graph=False, text_mode=cm.BigValueTextMode.VALUE_AND_NAME))
    return d


DASHBOARDS = {"overview": overview, "rules": rules, "model": model, "state": state}


# --------------------------------------------------------------------------
# Output


def all_panels(panels):
    for p in panels or []:
        yield p
        yield from all_panels(p.get("panels") if isinstance(p, dict) else getattr(p, "panels", None))


def build(builder):
    model = builder.build()
    for i, panel in enumerate(all_panels(model.panels), start=1):
        panel.id_val = i
    return model


def encode(model):
    return JSONEncoder(sort_keys=True, indent=2, ensure_ascii=False).encode(model) + "\n"


def write(out):
    out.mkdir(parents=True, exist_ok=True)
    for name, make in DASHBOARDS.items():
        (out / f"{name}.json").write_text(encode(build(make())))
        print(out / f"{name}.json")


# --------------------------------------------------------------------------
# Validation


def substitute(expr):
    for var, value in TEMPLATE_VARIABLES:
        expr = expr.replace(var, value)
    return expr


def metric_names(expr):
    names = set()
    for m in re.finditer(r'"[^"]*"|[A-Za-z_:][A-Za-z0-9_:]*', expr):
        word = m.group(0)
        if word.startswith(("fds_", "process_")):
            names.add(word)
    return names


def known_metric(name):
    if name in METRICS:
        return True
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[: -len(suffix)] in HISTOGRAMS:
            return True
    return False


def differences(a, b, path="$"):
    """Where two JSON values differ, as readable lines (a: the file, b: after decoding)."""
    if type(a) is not type(b):
        return [f"{path}: {json.dumps(a)[:80]} became {json.dumps(b)[:80]}"]
    out = []
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b)):
            if k not in b:
                out.append(f"{path}.{k}: not in Grafana's dashboard model (dropped when decoded)")
            elif k not in a:
                out.append(f"{path}.{k}: missing (decoding adds {json.dumps(b[k])[:80]})")
            else:
                out += differences(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items became {len(b)}"]
        for i, (x, y) in enumerate(zip(a, b)):
            out += differences(x, y, f"{path}[{i}]")
    elif a != b:
        out.append(f"{path}: {json.dumps(a)[:80]} became {json.dumps(b)[:80]}")
    return out


def validate(path):
    """Problems of one dashboard file, as strings naming the file; [] when fine."""
    problems = []

    def bad(msg):
        problems.append(f"{path.name}: {msg}")

    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        return [f"{path.name}: not JSON: {e}"], []

    # 1. Grafana's model: decoding through the SDK and encoding again gives the
    #    same JSON, so nothing is outside the model and every type is right.
    register_default_plugins()
    try:
        again = json.loads(encode(dm.Dashboard.from_json(data)))
    except Exception as e:  # noqa: BLE001 - any decoding failure is the finding
        return [f"{path.name}: Grafana's dashboard model cannot decode it: {e!r}"], []
    for diff in differences(data, again):
        bad(f"outside Grafana's dashboard model: {diff}")
    if data.get("schemaVersion") != dm.Dashboard().schema_version:
        bad(f"schemaVersion {data.get('schemaVersion')} is not the SDK's {dm.Dashboard().schema_version}")
    for key in ("uid", "title"):
        if not data.get(key):
            bad(f"no {key}")

    # 2. Variables: the datasource variable, instance; nothing hard-coded.
    variables = {v.get("name"): v for v in data.get("templating", {}).get("list", [])}
    ds = variables.get("datasource", {})
    if ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        bad("no datasource variable `datasource` of type datasource, query prometheus")
    inst = variables.get("instance", {})
    if inst.get("type") != "query" or "fds_ready" not in str(inst.get("query")) or not inst.get("includeAll") or not inst.get("multi"):
        bad("no multi-value `instance` query variable over fds_ready with All")
    for name, v in variables.items():
        if name != "datasource" and v.get("datasource") != DATASOURCE.to_json():
            bad(f"variable {name}: data source is not ${{datasource}}")

    # 3. Panels: ids, data sources, descriptions, targets, layout.
    panels = list(all_panels(data.get("panels", [])))
    ids = [p.get("id") for p in panels]
    for dup in sorted({i for i in ids if ids.count(i) > 1}, key=str):
        bad(f"panel id {dup} used more than once")
    cells = {}
    exprs = []
    for p in panels:
        title = p.get("title") or f"panel {p.get('id')}"
        g = p.get("gridPos") or {}
        if not all(isinstance(g.get(k), int) for k in "xywh") or g["w"] < 1 or g["h"] < 1 or g["x"] < 0 or g["x"] + g["w"] > 24:
            bad(f"{title}: gridPos {g} is not on the 24-column grid")
        else:
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    if (x, y) in cells:
                        bad(f"{title}: overlaps {cells[(x, y)]} at x={x} y={y}")
                        break
                    cells[(x, y)] = title
                else:
                    continue
                break
        if p.get("type") == "row":
            if p.get("collapsed") or p.get("panels"):
                bad(f"row {title}: collapsed or holding panels (the rows here are open, panels follow them)")
            continue
        if p.get("datasource") != DATASOURCE.to_json():
            bad(f"{title}: datasource is {p.get('datasource')}, not the ${{datasource}} variable")
        if not p.get("description"):
            bad(f"{title}: no description")
        if not p.get("fieldConfig", {}).get("defaults", {}).get("unit"):
            bad(f"{title}: no unit")
        targets = p.get("targets") or []
        if not targets:
            bad(f"{title}: no targets")
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs) or not all(refs):
            bad(f"{title}: refIds {refs} not unique and non-empty")
        for t in targets:
            if t.get("datasource") != DATASOURCE.to_json():
                bad(f"{title} {t.get('refId')}: target datasource is not the ${{datasource}} variable")
            if not t.get("expr"):
                bad(f"{title} {t.get('refId')}: no expr")
            else:
                exprs.append((title, t["expr"]))
    for a in data.get("annotations", {}).get("list", []):
        if a.get("expr"):
            if a.get("datasource") != DATASOURCE.to_json():
                bad(f"annotation {a.get('name')}: datasource is not the ${{datasource}} variable")
            exprs.append((f"annotation {a.get('name')}", a["expr"]))
    for q in (v.get("query") for v in variables.values() if v.get("type") == "query"):
        m = re.fullmatch(r"label_values\((.*),\s*\w+\)", str(q))
        if not m:
            bad(f"variable query {q!r} is not label_values(SELECTOR, LABEL)")
        else:
            exprs.append((f"variable query {q}", m.group(1)))

    # 4. Expressions: known variables only, the instance filter, known metrics.
    for title, expr in exprs:
        left = substitute(expr)
        if "$" in left:
            bad(f"{title}: a template variable outside grafana/README.md's list in: {expr}")
        if 'instance=~"$instance"' not in expr and expr != "fds_ready":  # fds_ready: the instance variable's own query
            bad(f'{title}: no instance=~"$instance" in: {expr}')
        for name in sorted(metric_names(expr)):
            if not known_metric(name):
                bad(f"{title}: {name} is not a metric of the contract: {expr}")
    return problems, [(title, substitute(e)) for title, e in exprs]


def promtool_parse(all_exprs):
    """Parse every substituted expression with promtool (as recording rules)."""
    promtool = shutil.which("promtool")
    if not promtool:
        print("dashboards: promtool not found, PromQL parse check skipped (scripts/prometheus install)", file=sys.stderr)
        return []
    with tempfile.TemporaryDirectory() as tmp:
        rules = pathlib.Path(tmp) / "dashboard-exprs.yml"
        lines = ["groups:", "  - name: dashboard-exprs", "    rules:"]
        where = {}
        for i, (label, expr) in enumerate(all_exprs):
            name = f"dashboard:expr_{i}"
            where[name] = label
            lines += [f"      - record: {name}", f"        expr: {json.dumps(expr)}"]
        rules.write_text("\n".join(lines) + "\n")
        out = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True)
        if out.returncode != 0:
            text = out.stdout + out.stderr
            for name, label in where.items():
                text = text.replace(f'"{name}"', label)
            return [f"promtool cannot parse a dashboard expression:\n{text}"]
    return []


def check(directory):
    files = sorted(directory.glob("*.json"))
    expected = {f"{name}.json" for name in DASHBOARDS}
    problems = []
    missing = expected - {f.name for f in files}
    problems += [f"{name}: missing" for name in sorted(missing)]
    all_exprs = []
    uids = {}
    for f in files:
        found, exprs = validate(f)
        problems += found
        all_exprs += [(f"{f.name} / {t}", e) for t, e in exprs]
        uid = json.loads(f.read_text()).get("uid")
        if uid in uids:
            problems.append(f"{f.name}: uid {uid} also used by {uids[uid]}")
        uids[uid] = f.name
    problems += promtool_parse(all_exprs)
    for p in problems:
        print(f"dashboards: {p}", file=sys.stderr)
    if not problems:
        print(f"dashboards: {len(files)} dashboards, {len(all_exprs)} expressions valid")
    return not problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--out", type=pathlib.Path, help="write the dashboards' JSON into this directory")
    group.add_argument("--check", type=pathlib.Path, help="validate the dashboards' JSON in this directory")
    a = ap.parse_args()
    if a.out:
        write(a.out)
    elif not check(a.check):
        sys.exit(1)


if __name__ == "__main__":
    main()
