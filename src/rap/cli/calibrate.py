"""``rap calibrate``: fit the match decision to the owner's own photos, and record it in the store."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import typer
from rich.table import Table

from rap.cli.context import print_json, progress_bar, state, stdout
from rap.retrieval import Retriever
from rap.retrieval.calibration import NONE_FOLDER, Outcome, Sweep, outcome, read_folder
from rap.retrieval.decision import RECORD_KEY, OperatingPoint


def calibrate_command(
    ctx: typer.Context,
    folder: Path = typer.Argument(..., help=f"A subfolder per concept name with photos of it, and {NONE_FOLDER}/ with photos of none of them."),
    apply: bool = typer.Option(False, "--apply", help="Record the proposed operating point in the store: every command and the server then use it."),
    max_false_matches: float | None = typer.Option(
        None, "--max-false-matches", min=0.0, max=1.0, help="Largest share of none/ photos that may get a match (default: the max_false_matches setting)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Acceptance and false matches on your labelled photos, at the operating point in force and at the one proposed."""
    st = state(ctx)
    settings = st.resolved.settings
    target = settings.max_false_matches if max_false_matches is None else max_false_matches
    store = st.store()
    labelled = read_folder(folder, {c.name for c in store.list()}, settings.calibrate_min_photos)
    retriever = Retriever.from_settings(store, settings)
    current = retriever.operating_point
    paths, truths = [p for p, _ in labelled.photos], [t for _, t in labelled.photos]
    with progress_bar("looking at the photos", len(paths)) as advance:
        evidence = []
        for photo in retriever.evidence_many(paths):
            evidence.append(photo)
            advance(1)
    sweep = Sweep(evidence, truths, current, retriever.has_face_keys)
    proposed = sweep.propose(target)
    now = outcome(evidence, truths, current, retriever.has_face_keys)
    then = outcome(evidence, truths, proposed, retriever.has_face_keys)
    estimate = sweep.held_out(target)
    fitted = {"photos": len(paths), "concept_photos": labelled.concepts, "none_photos": labelled.strangers,
              "max_false_matches": target, "acceptance": round(then.acceptance, 4), "false_match_rate": round(then.false_match_rate, 4),
              "held_out_acceptance": round(estimate.acceptance, 4), "held_out_false_match_rate": round(estimate.false_match_rate, 4),
              "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}  # fmt: skip
    proposed = replace(proposed, source="store", fitted=fitted)
    if apply:
        store.record(RECORD_KEY, proposed.record())
    overridden = settings.threshold is not None
    if as_json:
        print_json(
            {
                "folder": str(folder),
                "max_false_matches": target,
                "current": {"operating_point": current.to_dict(), "outcome": now.to_dict()},
                "proposed": {"operating_point": proposed.to_dict(), "outcome": then.to_dict(), "held_out": estimate.to_dict()},
                "applied": apply,
                "threshold_setting_overrides": overridden,
            }
        )
        return
    _report(labelled.concepts, labelled.strangers, current, now, proposed, then, estimate, target)
    if apply:
        stdout.print("recorded in the store: every command and the server now use the proposed operating point")
    else:
        stdout.print("run again with --apply to record the proposed operating point in the store")
    if overridden:
        stdout.print(f"note: the threshold setting ({settings.threshold}) overrides the image threshold of any recorded point; unset it to use one")


def _report(concepts: int, strangers: int, current: OperatingPoint, now: Outcome, proposed: OperatingPoint, then: Outcome, estimate: Outcome, target: float) -> None:
    stdout.print(f"{concepts} photo(s) of your concepts, {strangers} of none of them; false matches allowed: {target:.2f}")
    table = Table("operating point", "image threshold", "ratio test", "acceptance", "false matches", box=None, header_style="bold")

    def rates(o: Outcome) -> tuple[str, str]:
        return f"{o.acceptance:.3f} ({o.accepted}/{o.concept_photos})", f"{o.false_match_rate:.3f} ({o.false_matches}/{o.none_photos})"

    def values(p: OperatingPoint) -> tuple[str, str]:
        threshold = "inf" if p.keeps_all else f"{p.image_threshold:.3f}"
        return threshold, "off" if p.distinct_ratio is None or p.keeps_all else f"{p.distinct_ratio:.2f}"

    table.add_row(f"in force ({current.source})", *values(current), *rates(now))
    table.add_row("proposed", *values(proposed), *rates(then))
    table.add_row("proposed, held out (leave-one-out)", "", "", *rates(estimate))
    stdout.print(table)
