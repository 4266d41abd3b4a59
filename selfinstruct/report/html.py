"""report.html: one self-contained page (inline CSS and SVG, no script, no request of any kind)."""

from __future__ import annotations

from html import escape
from typing import Any

import pandas as pd

from selfinstruct.report import plots
from selfinstruct.report.measures import PAPER_TABLE1, WORDS_NOTE

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;max-width:1100px;
padding:0 1rem;color:#222}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.6rem 0}td,th{border:1px solid #ddd;padding:.25rem .6rem;
text-align:left;vertical-align:top}th{background:#f5f5f5}td.n{text-align:right;font-variant-numeric:tabular-nums}
.figs{display:flex;flex-wrap:wrap;gap:1rem}.figs>div{flex:1 1 320px}.note{color:#555;font-size:.9rem}
.sample td{max-width:28rem;white-space:pre-wrap;word-break:break-word;font-size:.85rem}
svg{max-width:100%;height:auto}
"""


def _n(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.2f}" if value >= 1 or value == 0 else f"{value:.4f}"
    return f"{value:,}" if isinstance(value, int) else escape(str(value))


def _cell(value: Any) -> str:
    if isinstance(value, int | float) or value is None:
        return f'<td class="n">{_n(value)}</td>'
    return f"<td>{escape(str(value))}</td>"


def _table(header: list[str], rows: list[list[Any]], css: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(map(_cell, row)) + "</tr>" for row in rows)
    return f'<table class="{css}"><tr>{head}</tr>{body}</table>'


def _table1(report: dict[str, Any]) -> str:
    ours, paper = report, PAPER_TABLE1
    clf = ours["classification_instructions"]
    rows = [
        ["instructions", ours["instructions"], paper["instructions"]],
        ["classification instructions", clf, paper["classification_instructions"]],
        [
            "non-classification instructions",
            None if clf is None else ours["instructions"] - clf,
            paper["instructions"] - paper["classification_instructions"],
        ],  # fmt: skip
        ["instances", ours["instances"], paper["instances"]],
        ["instances with an empty input", ours["empty_input_instances"], paper["empty_input_instances"]],
    ]
    labels = {"instruction": "instruction", "input_nonempty": "non-empty input", "output": "output"}
    for key, label in labels.items():
        rows.append([f"average words: {label}", ours["avg_words"][key], paper["avg_words"][key]])
    note = (
        ""
        if clf is not None
        else "<p class='note'>The source does not say which tasks are classification.</p>"
    )
    return (
        "<h2>Statistics (the paper's Table 1)</h2>"
        + _table(["", "this data", "Self-Instruct paper (GPT-3)"], rows)
        + note
        + f"<p class='note'>{escape(WORDS_NOTE)}</p>"
    )


def _funnel(funnel: dict[str, Any], novelty: dict[str, Any]) -> str:
    rows: list[list[Any]] = [
        ["candidate instructions", funnel["candidates"]],
        ["accepted", funnel["accepted"]],
    ]
    rows += [[f"rejected: {reason}", n] for reason, n in funnel["rejected"].items()]
    rows += [[f"classification: {k}", n] for k, n in funnel["classification"].items()]
    inst = funnel["instances"]
    rows += [["tasks annotated", inst["tasks"]], ["instances generated", inst["generated"]],
             ["instances kept (dataset records)", inst["kept"]]]  # fmt: skip
    rows += [[f"instances dropped: {reason}", n] for reason, n in inst["dropped"].items()]
    rows += [[f"requests: {stage}", n] for stage, n in funnel["requests"].items()]
    rows += [[f"tokens: {kind}", n] for kind, n in funnel["tokens"].items()]
    rows += [[f"retries: {kind}", n] for kind, n in funnel["retries"].items()]
    if funnel.get("wall_seconds") is not None:
        rows.append(["wall seconds", float(funnel["wall_seconds"])])
    return (
        "<h2>Where the candidates went</h2>"
        + _table(["", "count"], rows)
        + plots.yield_curve(novelty["points"], novelty["window"])
        + "<p class='note'>Accepted share of each window of candidates, in request order: a curve that "
        "falls toward zero means new prompts mostly repeat the pool (the seed set is running dry).</p>"
    )


def _verbs(verb_noun: dict[str, Any]) -> str:
    out = "<h2>Verbs and their direct objects (the paper's Fig. 3)</h2>"
    if verb_noun.get("coverage") is None:
        return out + f"<p>{escape(verb_noun['note'])}</p>"
    out += (
        f"<p>{verb_noun['pairs']:,} of {verb_noun['parsed']:,} instructions "
        f"({verb_noun['coverage']:.1%}) have a root verb with a direct noun object "
        f"(the paper: 26,559 of 52,445, 50.6%). {escape(verb_noun['note'])}</p>"
    )
    if verb_noun["top"]:
        nouns: dict[str, list[str]] = {}
        for verb, noun, count in verb_noun["top"]:
            nouns.setdefault(verb, []).append(f"{noun} ({count:,})")
        width = max(len(v) for v in nouns.values())
        rows = [[verb, total, *nouns.get(verb, []), *[""] * (width - len(nouns.get(verb, [])))]
                for verb, total in verb_noun["verbs"]]  # fmt: skip
        header = ["verb", "with an object", *[f"noun {i + 1}" for i in range(width)]]
        out += f"<div class='figs'><div>{plots.sunburst(verb_noun['verbs'], verb_noun['top'])}</div>"
        out += f"<div>{_table(header, rows)}</div></div>"
    return out


def _rouge(rouge: dict[str, Any]) -> str:
    out = "<h2>ROUGE-L to the most similar seed (the paper's Fig. 4)</h2>"
    if rouge.get("mean") is None:
        return out + f"<p>{escape(rouge.get('note', 'Not computed.'))}</p>"
    return (
        out + f"<p>Mean {rouge['mean']:.3f}, median {rouge['median']:.3f}, against {rouge['seeds']} seed "
        f"instructions ({escape(rouge['seeds_file'])}; {rouge['tokenizer']} tokens).</p>"
        + plots.histogram(rouge["histogram"], "ROUGE-L to the most similar seed", "ROUGE-L F", "#8172b3")
    )


def _lengths(lengths: dict[str, Any]) -> str:
    titles = {"instruction": "instructions", "input_nonempty": "non-empty inputs", "output": "outputs"}
    figures = "".join(
        f"<div>{plots.histogram(lengths[key], title, 'words (last bin: longer)', color)}</div>"
        for (key, title), color in zip(titles.items(), ["#4c72b0", "#dd8452", "#55a868"], strict=True)
        if lengths[key]["counts"]
    )
    return f"<h2>Lengths (the paper's Fig. 5)</h2><div class='figs'>{figures}</div>"


def _sample(sample: pd.DataFrame, csv_name: str, seed: int) -> str:
    rows = sample[["id", "instruction", "input", "output"]].values.tolist()
    return (
        f"<h2>Review sample ({len(sample)} records, seed {seed})</h2>"
        f"<p class='note'>The same records are in <code>{escape(csv_name)}</code>, with empty columns for "
        "the paper's four judgments (valid instruction, appropriate input, correct output, all valid) "
        "to fill in for a human audit like the paper's Table 2.</p>"
        + _table(["id", "instruction", "input", "output"], rows, "sample")
    )


def render(report: dict[str, Any], sample: pd.DataFrame, csv_name: str) -> str:
    source = report["source"]
    title = f"Self-Instruct data report: {source['name']}"
    parts = [
        f"<h1>{escape(title)}</h1>",
        f"<p class='note'>{escape(source['path'])} ({escape(source['layout'])}, language "
        f"{escape(source['language'])}) · {escape(report['generated_by'])}</p>",
        _table1(report),
    ]
    if report["funnel"] is not None:
        parts.append(_funnel(report["funnel"], report["novelty_yield"]))
    parts += [_verbs(report["verb_noun"]), _rouge(report["rouge_to_seed"]), _lengths(report["lengths"])]
    if len(sample):
        parts.append(_sample(sample, csv_name, report["sample"]["seed"]))
    body = "\n".join(parts)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>'
        f"<body>\n{body}\n</body></html>\n"
    )
