"""Instance rules applied before an instance enters the dataset (Self-Instruct §2.3)."""

from __future__ import annotations

from collections import Counter, defaultdict

from selfinstruct.tasks import Instance


def apply_instance_rules(instances: list[Instance], max_instances: int) -> tuple[list[Instance], Counter]:
    """Keep the valid instances of one task; count the dropped ones by reason.

    Drops: empty output, input equal to output, a field ending in ':' (generation stopped early),
    exact duplicates, every instance of a non-empty input that appears with different outputs,
    and instances past max_instances.
    """
    drops: Counter = Counter()
    kept: list[Instance] = []
    seen: set[tuple[str, str]] = set()
    for inst in instances:
        inp, out = inst.input.strip(), inst.output.strip()
        reason = None
        if not out:
            reason = "empty_output"
        elif inp == out:
            reason = "input_equals_output"
        elif inp.endswith(":") or out.endswith(":"):
            reason = "incomplete"
        elif (inp, out) in seen:
            reason = "duplicate_instance"
        if reason:
            drops[reason] += 1
            continue
        seen.add((inp, out))
        kept.append(Instance(input=inp, output=out))

    outputs: dict[str, set[str]] = defaultdict(set)
    for inst in kept:
        outputs[inst.input].add(inst.output)
    conflicting = {inp for inp, outs in outputs.items() if inp and len(outs) > 1}
    if conflicting:
        before = len(kept)
        kept = [i for i in kept if i.input not in conflicting]
        drops["conflicting_outputs"] += before - len(kept)
    if len(kept) > max_instances:
        drops["over_max_instances"] += len(kept) - max_instances
        kept = kept[:max_instances]
    return kept, drops
