"""The report's MLflow side without running a pipeline: metric keys per stage from report.json's
data, and the HTML page MLflow's artifact viewer renders whole."""

from __future__ import annotations

import pytest

from lit_qwen3.recipe.report_html import render_html
from lit_qwen3.recipe.report_mlflow import stage_metric_values

DATA = {
    "stages": {
        "general_rl": {
            "think_pass1": 0.5,
            "think_pass1_ci": [0.25, 0.75],
            "no_think_pass1": 0.125,
            "no_think_pass1_ci": [0.0, 0.25],
            "generalisation": {"think_pass1": 0.1, "no_think_pass1": None},
        }
    },
    "table21": {
        "rl": {
            "pass1": 0.3,
            "pass1_ci": [0.2, 0.4],
            "pass_k": 0.6,
            "pass_k_ci": [0.5, 0.7],
            "k": 4,
        },
        "on_policy": {"pass1": 0.35, "pass1_ci": [0.3, 0.4], "pass_k": 0.7, "k": 4},
    },
}
CONFIG = {
    "stages": {"general_rl": "general_rl"},
    "table21": {"rl": "general_rl", "on_policy": "opd"},
}


def test_each_number_goes_to_its_stage_under_a_key_naming_the_set_with_its_interval():
    values = stage_metric_values(DATA, CONFIG)
    general, opd = values["general_rl"], values["opd"]
    assert general["heldout/think/pass_at_1"] == 0.5
    assert (
        general["heldout/think/pass_at_1_ci_low"],
        general["heldout/think/pass_at_1_ci_high"],
    ) == (
        0.25,
        0.75,
    )
    assert general["heldout_longer/think/pass_at_1"] == 0.1
    assert "heldout_longer/no_think/pass_at_1" not in general  # no longer problems: no number
    # a Table 22 row that is a Table 21 row too keeps both pass@1s apart (other sample counts)
    assert (
        general["heldout/think/pass_at_1_of_4"] == 0.3 and general["heldout/think/pass_at_4"] == 0.6
    )
    assert opd["heldout/think/pass_at_1"] == 0.35 and opd["heldout/think/pass_at_4"] == 0.7
    assert "heldout/think/pass_at_4_ci_low" not in opd  # no interval in the data: none invented


def test_html_report_embeds_its_figures_and_renders_tables(tmp_path):
    (tmp_path / "figure2.png").write_bytes(b"\x89PNG fake")
    markdown = "# Report\n\n- **holds**: `x` up\n\n![Figure 2](figure2.png)\n\n| a | b |\n|---|---|\n| 1 | <2> |\n"
    page = render_html(markdown, tmp_path)
    assert '<img alt="Figure 2" src="data:image/png;base64,iVBORyBmYWtl">' in page
    assert (
        "<table><tr><th>a</th><th>b</th></tr><tr><td>1</td><td>&lt;2&gt;</td></tr></table>" in page
    )
    assert "<li><strong>holds</strong>: <code>x</code> up</li>" in page
    missing = render_html("![Figure 9](nope.png)", tmp_path)
    assert "nope.png missing" in missing


@pytest.mark.parametrize("text", ["plain *it* here", "a*b*c"])
def test_html_emphasis_only_between_words(text, tmp_path):
    page = render_html(text, tmp_path)
    assert ("<em>it</em>" in page) == (text == "plain *it* here")
