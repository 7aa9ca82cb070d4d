"""The Quantize wizard's quality curve says what it rests on, and remembers it for the next visit."""

import pytest


@pytest.fixture
def page(qtbot, open_window, home):  # noqa: ANN001, ANN201
    window = open_window("quantize")
    return window.pages["quantize"]


def test_the_curve_title_names_the_engines_basis_and_survives_reloading(page) -> None:  # noqa: ANN001
    page.source = "bundled"
    basis = "after calibration, scaled by 0.35 from 2 earlier run(s) of this model"
    page._on_event({"event": "metric", "name": "predicted_ppl_curve", "value": [[2.3, 60.0], [4.2, 16.0]],
                    "basis": basis})
    page._draw_budget_chart()
    assert page.budget_curve.title == f"Predicted perplexity: {basis}"
    page.curve, page.curve_basis = [], ""
    page._load_cached_curve()  # a later visit: curve and basis come back from the settings
    assert page.curve == [(2.3, 60.0), (4.2, 16.0)] and page.budget_curve.title.endswith(basis)
    page._on_event({"event": "metric", "name": "predicted_ppl_curve", "value": [[2.3, 90.0], [4.2, 17.0]]})
    page._draw_budget_chart()  # an engine that sends no basis: the old wording, never a stale basis
    assert page.budget_curve.title == "Predicted perplexity (last measurement of this model)"
