"""The interactive reports in a real headless browser (Chromium + ChromeDriver via selenium)."""
from __future__ import annotations

import math
import shutil
import tempfile

import numpy as np
import pytest

import inertia
from inertia.report import write_race_report, write_sweep_report

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1000"]


@pytest.fixture
def browser(chromium, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = chromium
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp_path)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _ready(driver, timeout=30):
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(lambda d: d.execute_script("return document.body.getAttribute('data-ready')") == "1")


def _slide(driver, slider_id, value):
    driver.execute_script(
        "const s = document.getElementById(arguments[0]); s.value = arguments[1];"
        "s.dispatchEvent(new Event('input', {bubbles: true}));", slider_id, str(value))


def _drawn_points(driver, element_id):
    """The pixel points of an SVG path's ``d`` (``M x,y L x,y ...``)."""
    d = driver.find_element("id", element_id).get_attribute("d")
    return [tuple(map(float, p[1:].split(","))) for p in d.split()]


def _pixels(spec, positions):
    """Where the page draws ``positions`` (data coordinates, up to the first non-finite one), by the
    embedded contour panel's map, as an array ``[n, 2]``."""
    pw = spec["w"] - spec["pad"]["left"] - spec["pad"]["right"]
    ph = spec["h"] - spec["pad"]["top"] - spec["pad"]["bottom"]
    p = np.asarray(positions, dtype=float)
    p = p[: int(np.isfinite(p).all(-1).cumprod().sum())]
    return np.stack([spec["pad"]["left"] + (p[:, 0] - spec["x0"]) / (spec["x1"] - spec["x0"]) * pw,
                     spec["pad"]["top"] + (1 - (p[:, 1] - spec["y0"]) / (spec["y1"] - spec["y0"])) * ph], 1)


def _same_path(drawn, expected, tolerance):
    return len(drawn) == len(expected) and float(np.abs(np.asarray(drawn) - expected).max()) <= tolerance


# each raced rule, the slider pair to move it to, and the same run written plainly for inertia.race
SLIDER_RULES = [
    (dict(rule="momentum", lr=0.02, momentum=0.9), lambda lr, mu: dict(rule="sgd", lr=lr, momentum=mu)),
    (dict(rule="nesterov", lr=0.02, momentum=0.9, convention="sutskever"),
     lambda lr, mu: dict(rule="sgd", lr=lr, momentum=mu, nesterov=True, convention="sutskever")),
    (dict(rule="adam", lr=0.05), lambda lr, mu: dict(rule="adam", lr=lr, betas=(mu, 0.999))),
    (dict(rule="lion", lr=0.02), lambda lr, mu: dict(rule="lion", lr=lr, betas=(0.9, mu))),
]


def test_race_report_sliders_draw_the_race_engines_path_for_every_rule(browser, tmp_path):
    from inertia.race_sliders import slider_grids

    configs = [c for c, _ in SLIDER_RULES] + [dict(rule="muon", lr=0.05)]
    result = inertia.race("marble", configs, steps=80)
    page = write_race_report(tmp_path / "race.html", result, slider_grids(result))
    text = page.read_text()
    assert "<script src" not in text and "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")

    browser.get(page.resolve().as_uri())
    _ready(browser)
    spec = browser.execute_script("return JSON.parse(document.getElementById('race-data').textContent).contour")
    assert len(browser.find_elements("css selector", "path.race-path")) == 5
    for i, (config, plain) in enumerate(SLIDER_RULES):
        assert browser.find_element("id", f"lr-value-{i}").text == f"{config['lr']:g}"
        assert _same_path(_drawn_points(browser, f"path-{i}"), _pixels(spec, result.positions[i]), 0.06)
        _slide(browser, f"lr-slider-{i}", 3)   # lr × 2^(−3/2)
        _slide(browser, f"momentum-slider-{i}", 4)
        path = browser.find_element("id", f"path-{i}")
        lr, mu = float(path.get_attribute("data-lr")), float(path.get_attribute("data-momentum"))
        assert lr == pytest.approx(config["lr"] * 2 ** -1.5, rel=1e-5) and mu in (0.4, 0.5)  # nesterov: no μ = 0
        expected = inertia.race("marble", [plain(lr, mu)], steps=80).positions[0]
        drawn = _drawn_points(browser, f"path-{i}")
        assert _same_path(drawn, _pixels(spec, expected), 0.06), config["rule"]
        assert not _same_path(drawn, _pixels(spec, result.positions[i]), 1)
    assert browser.find_elements("id", "lr-slider-4") == []
    note = browser.find_element("id", "note-4").text
    assert "adam fallback" in note and "no single momentum" in note
    labels = browser.find_element("class name", "controls").text
    assert "β₁ (decay of the first-moment average: the momentum)" in labels and "β₂ (decay of Lion's momentum" in labels
    shot = tmp_path / "race-report.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000


def test_race_report_shows_quadratic_theory(browser, tmp_path):
    from inertia.race_sliders import slider_grids

    q = inertia.surfaces.quadratic(100)
    lr, mu = q.optimal("momentum")
    result = inertia.race(q, [dict(rule="momentum", lr=lr, momentum=mu)], steps=80)
    page = write_race_report(tmp_path / "quadratic.html", result, slider_grids(result))
    browser.get(page.resolve().as_uri())
    _ready(browser)
    theory = browser.find_element("id", "theory-0").text
    assert "0.8182" in theory and "stable" in theory
    lrs = browser.execute_script("return JSON.parse(document.getElementById('race-data').textContent).grids[0].lrs")
    _slide(browser, "lr-slider-0", len(lrs) - 1)   # lr 8 lr*: lr·λmax = 26 > 2 + 2μ
    assert "unstable" in browser.find_element("id", "theory-0").text
    assert "diverged" in browser.find_element("id", "outcome-0").text


def test_race_report_basin_layer_follows_the_sliders(browser, tmp_path):
    from inertia.basins import basin_map
    from inertia.race_sliders import slider_grids

    result = inertia.race("marble", [dict(rule="momentum", lr=0.02, momentum=0.9)], steps=150)
    bmap = basin_map("marble", [0.005, 0.01, 0.02, 0.04, 0.08], [0.0, 0.3, 0.6, 0.9], steps=150)
    page = write_race_report(tmp_path / "basins.html", result, slider_grids(result), basins=bmap)
    browser.get(page.resolve().as_uri())
    _ready(browser)
    cells = browser.find_elements("css selector", "#basins rect.basin")
    assert len(cells) == 20
    ring = browser.find_element("id", "basin-choice")
    cell = cells[2 * 4 + 3]  # lr 0.02, momentum 0.9: the sliders' first pair, at the centre of its cell
    centre_x = float(cell.get_attribute("x")) + float(cell.get_attribute("width")) / 2
    centre_y = float(cell.get_attribute("y")) + float(cell.get_attribute("height")) / 2
    assert float(ring.get_attribute("cx")) == pytest.approx(centre_x, abs=1)
    assert float(ring.get_attribute("cy")) == pytest.approx(centre_y, abs=1)
    _slide(browser, "momentum-slider-0", 0)
    assert float(ring.get_attribute("cy")) > centre_y + 100   # momentum 0 is near the bottom
    browser.save_screenshot(str(tmp_path / "basins-report.png"))


def _records():
    records = []
    for lr in (0.01, 0.03, 0.1, 0.3):
        for mu in (0.0, 0.5, 0.9):
            diverged = lr == 0.3 and mu == 0.9
            acc = 0.5 + 0.4 * math.exp(-((math.log10(lr) + 1) ** 2)) + 0.05 * mu
            curve = [2.3 * math.exp(-0.05 * t * lr * 10 * (1 + mu)) + 0.1 for t in range(50)]
            records.append(dict(lr=lr, momentum=mu, status="diverged" if diverged else "ok",
                                diverged_step=12 if diverged else None,
                                val_loss_mean=float("nan") if diverged else 1 - acc, val_loss_std=0.01,
                                val_accuracy_mean=float("nan") if diverged else acc, val_accuracy_std=0.02,
                                train_loss_final=float("inf") if diverged else curve[-1],
                                train_loss_curve=curve[:12] + [float("nan")] if diverged else curve))
    return records


def _curves(browser, label):
    return [p for p in browser.find_elements("css selector", f"#curves path.{label}") if p.get_attribute("d")]


def test_sweep_report_heatmap_hover_click_and_overlay(browser, tmp_path):
    records = [dict(r, steps=500, eval_steps=[100, 200, 300, 400, 500],
                    val_loss_mean_curve=[1.0, 0.8, 0.7, 0.65, 0.6]) for r in _records()]
    commands = [f"inertia train --lr {r['lr']} --momentum {r['momentum']}" for r in records]
    page = write_sweep_report(tmp_path / "sweep.html", records, title="test sweep", commands=commands)
    browser.get(page.resolve().as_uri())
    _ready(browser)
    cells = browser.find_elements("css selector", "#heatmap .cell")
    assert len(cells) == 12
    rect = cells[0].find_element("css selector", "rect")
    assert rect.size["width"] > 10 and rect.size["height"] > 10
    assert len(browser.find_elements("css selector", '.cell[data-status="diverged"]')) == 1
    assert len(browser.find_elements("css selector", "#best tr.best-row")) == 10
    # the best is chosen at load: its training and validation curves, its reproduce command
    assert len(_curves(browser, "train")) == 1 and len(_curves(browser, "val")) == 1
    assert "inertia train --lr" in browser.find_element("id", "command").text
    axis = browser.find_element("id", "curve-axes").text
    assert "500" in axis and "250" in axis                              # real update counts, not indices
    from selenium.webdriver import ActionChains

    ok = browser.find_elements("css selector", '.cell[data-status="ok"]')
    ActionChains(browser).move_to_element(ok[3]).perform()            # hover: a grey preview beside the best
    assert len(_curves(browser, "train")) == 2
    ok[3].click()                                                       # click: it joins the overlay
    ok[5].click()
    ActionChains(browser).move_to_element(browser.find_element("id", "legend")).perform()
    overlaid = {p.get_attribute("data-record") for p in _curves(browser, "train")}
    assert {ok[3].get_attribute("data-record"), ok[5].get_attribute("data-record")} <= overlaid
    assert len(overlaid) == 3 and len(browser.find_elements("css selector", ".cell.selected")) == 3
    assert len({p.get_attribute("stroke") for p in _curves(browser, "train")}) == 3
    ok[5].click()                                                       # click again: removed
    assert len(_curves(browser, "train")) == 2
    diverged = browser.find_element("css selector", '.cell[data-status="diverged"]')
    diverged.click()
    assert browser.find_elements("css selector", "#curves .diverged-marker"), "a diverged curve is marked ×"
    assert "diverged at step 12" in browser.find_element("id", "detail").text
    browser.save_screenshot(str(tmp_path / "sweep-report.png"))


def test_sweep_report_one_dimensional_regression(browser, tmp_path):
    records = [dict(lr=lr, status="ok", steps=200, best_step=200, val_loss_mean=0.5 / lr, val_rmse_mean=0.7 / lr,
                    test_rmse_mean=0.8 / lr, test_r2_mean=1 - 0.1 / lr, eval_steps=[100, 200],
                    val_loss_mean_curve=[1.0 / lr, 0.5 / lr], train_loss_curve=[2.0, 1.0, 0.6])
               for lr in (1.0, 2.0, 4.0)]
    page = write_sweep_report(tmp_path / "regression.html", records, metric="val_loss_mean")
    browser.get(page.resolve().as_uri())
    _ready(browser)
    assert len(browser.find_elements("css selector", "#heatmap .cell")) == 3
    heads = [h.text for h in browser.find_elements("css selector", "#best th")]
    assert "val RMSE" in heads and "test R²" in heads and not any("acc" in h for h in heads)
    assert "None" not in browser.find_element("tag name", "body").text
    browser.find_elements("css selector", "#heatmap .cell")[0].click()
    assert len(_curves(browser, "train")) == 2 and len(_curves(browser, "val")) == 2
