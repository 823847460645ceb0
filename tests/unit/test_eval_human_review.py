"""Inter-rater agreement on published worked examples, and the human-review export/import round trip."""

from __future__ import annotations

import csv
import json

import pytest

from rayloom.errors import UserError
from rayloom.eval.human_review import export_review, import_reviews
from rayloom.eval.kappa import cohens_kappa, fleiss_kappa


def test_cohens_kappa_textbook_example():
    # 50 items: both yes 20, A yes / B no 5, A no / B yes 10, both no 15 -> p_o = 0.7, p_e = 0.5.
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohens_kappa(a, b) == pytest.approx(0.4)
    assert cohens_kappa(a, a) == pytest.approx(1.0)


def test_weighted_cohens_kappa_matches_scikit_learn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    a = [1, 2, 3, 4, 5, 3, 2, 4, 5, 1, 3, 3]
    b = [1, 3, 3, 5, 4, 3, 1, 4, 5, 2, 2, 3]
    for weights in ("linear", "quadratic"):
        expected = sklearn_metrics.cohen_kappa_score(a, b, labels=[1, 2, 3, 4, 5], weights=weights)
        assert cohens_kappa(a, b, [1, 2, 3, 4, 5], weights) == pytest.approx(expected)
    assert cohens_kappa(a, b) == pytest.approx(sklearn_metrics.cohen_kappa_score(a, b))


# Fleiss (1971) as worked on Wikipedia: 10 items, 14 raters, 5 categories -> kappa = 0.210.
FLEISS_TABLE = [
    [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
]


def test_fleiss_kappa_known_table():
    assert fleiss_kappa(FLEISS_TABLE) == pytest.approx(0.20993, abs=1e-4)
    with pytest.raises(ValueError):
        fleiss_kappa([[1, 1], [2, 1]])


def _predictions(system_offset: int) -> dict[str, list[dict]]:
    return {"qa": [{"id": f"qa#{i}", "prompt": f"question {i}", "response": f"answer {i + system_offset}",
                    "reference": [f"answer {i}"]} for i in range(10)],
            "mc": [{"id": "mc#0", "prompt": "no response field"}]}


def test_review_round_trip_per_system_means_and_kappas(tmp_path):
    out = tmp_path / "review"
    exported = export_review({"base": _predictions(1), "tuned": _predictions(0)}, str(out), num_items=6, seed=3)
    assert exported["num_items"] == 12  # six examples, both systems
    items = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    with open(out / "items.csv") as handle:
        assert [row["item_id"] for row in csv.DictReader(handle)] == [i["item_id"] for i in items]
    # Blinded: the raters' files never name a system.
    assert all("base" not in json.dumps(i) and "tuned" not in json.dumps(i) for i in items)
    key = json.loads((out / "key.json").read_text())["key"]
    # Paired: the same examples for both systems.
    by_system = {s: sorted(v["example_id"] for v in key.values() if v["system"] == s) for s in ("base", "tuned")}
    assert by_system["base"] == by_system["tuned"]

    # Three raters: base gets 2 (alice, bob) or 3 (carol); tuned gets 4, except bob gives 5 on one item.
    ids = [i["item_id"] for i in items]
    tuned = [i for i in ids if key[i]["system"] == "tuned"]
    scores = {
        "alice": {i: 2 if key[i]["system"] == "base" else 4 for i in ids},
        "bob": {i: 2 if key[i]["system"] == "base" else (5 if i == tuned[0] else 4) for i in ids},
        "carol": {i: 3 if key[i]["system"] == "base" else 4 for i in ids},
    }
    files = []
    for rater, values in scores.items():
        path = tmp_path / f"{rater}.csv"
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["item_id", "score", "comment"])
            writer.writeheader()
            writer.writerows({"item_id": i, "score": s, "comment": ""} for i, s in values.items())
        files.append(str(path))
    report = import_reviews(str(out), files, kappa_weights="none")
    assert report["systems"]["base"]["mean"] == pytest.approx((2 * 6 + 2 * 6 + 3 * 6) / 18)
    assert report["systems"]["tuned"]["mean"] == pytest.approx((4 * 6 + (4 * 5 + 5) + 4 * 6) / 18)
    order = sorted(ids)
    expected_ab = cohens_kappa([scores["alice"][i] for i in order], [scores["bob"][i] for i in order])
    assert report["cohen_kappa"]["pairs"]["alice~bob"]["kappa"] == pytest.approx(expected_ab)
    table = [[sum(1 for r in scores.values() if r[i] == c) for c in range(1, 6)] for i in order]
    assert report["fleiss_kappa"]["kappa"] == pytest.approx(fleiss_kappa(table))
    assert report["fleiss_kappa"]["items"] == 12
    assert (out / "review_report.md").read_text().startswith("# Human review")


def test_review_import_rejects_bad_files(tmp_path):
    out = tmp_path / "review"
    export_review({"a": _predictions(0)}, str(out), num_items=3)
    item = json.loads((out / "items.jsonl").read_text().splitlines()[0])["item_id"]
    bad_scale = tmp_path / "r1.jsonl"
    bad_scale.write_text(json.dumps({"item_id": item, "score": 9}) + "\n")
    with pytest.raises(UserError, match="whole number in"):
        import_reviews(str(out), [str(bad_scale)])
    unknown = tmp_path / "r2.jsonl"
    unknown.write_text(json.dumps({"item_id": "nope", "score": 3}) + "\n")
    with pytest.raises(UserError, match="not in this export"):
        import_reviews(str(out), [str(unknown)])
    with pytest.raises(UserError, match="no key.json"):
        import_reviews(str(tmp_path), [str(unknown)])
