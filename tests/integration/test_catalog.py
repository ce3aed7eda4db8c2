"""Catalog-scale jobs: CSV/JSONL catalogs, matrices, edits between runs, normalization,
budgets, samples."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil

from PIL import Image

from tests.conftest import ROOT, cli, generation_requests, items, manifest


def write_catalog(job, rows: list[dict], name: str = "catalog.csv") -> None:
    path = job.root / name
    if name.endswith(".csv"):
        cols = list(rows[0])
        lines = [",".join(cols)] + [",".join(str(r.get(c, "")) for c in cols) for r in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    else:
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def make_products(job, skus: list[str]) -> None:
    (job.root / "products").mkdir(exist_ok=True)
    for i, sku in enumerate(skus):
        Image.new("RGB", (40, 30), (i * 40 % 256, 90, 160)).save(job.root / "products" / f"{sku}.png")


def catalog_manifest(url: str, **extra) -> dict:
    data = manifest(url, [], **extra)
    del data["items"]
    data["items_from"] = {"file": "catalog.csv", "key": "{sku}"}
    data["prompt"] = "Place the {title} from image 1 on the marble table in image 2"
    data["images"] = ["products/{sku}.png", "images/scene.png"]
    return data


def test_a_csv_catalog_crossed_with_a_matrix(job, mock):
    make_products(job, ["A1", "B2", "C3"])
    write_catalog(job, [{"sku": "A1", "title": "lamp"}, {"sku": "B2", "title": "vase"}, {"sku": "C3", "title": "chair"}])
    data = catalog_manifest(mock.url)
    data["matrix"] = {"aspect_ratio": ["1:1", "4:5"], "style": ["studio", "lifestyle"]}
    data["output"] = {"dir": "out", "filename": "{sku}/{style}-{aspect_ratio}.png"}
    data["prompt"] = "{style} shot: the {title} from image 1 on the table in image 2"
    job.write(data)
    result = cli("run", job.manifest)
    assert result.exit_code == 0, result.stderr
    states = job.state_of()
    assert len(states) == 12 and set(states.values()) == {"succeeded"}
    assert "A1~4:5~lifestyle" in states
    assert (job.out / "B2" / "lifestyle-4_5.png").is_file()  # ":" is mapped (output_paths)
    reqs = generation_requests(mock)
    assert len(reqs) == 12
    lamp = [r for r in reqs if r["prompt"] == "studio shot: the lamp from image 1 on the table in image 2"]
    assert sorted(r["body"]["generationConfig"]["imageConfig"]["aspectRatio"] for r in lamp) == ["1:1", "4:5"]
    assert all(r["n_images"] == 2 for r in reqs)


def test_a_jsonl_catalog_with_an_id_column_and_its_own_params(job, mock):
    make_products(job, ["x", "y"])
    write_catalog(job, [{"id": "x", "sku": "x", "title": "mug", "aspect_ratio": "16:9"},
                        {"id": "y", "sku": "y", "title": "pen"}], "catalog.jsonl")
    data = catalog_manifest(mock.url)
    data["items_from"] = {"file": "catalog.jsonl"}
    job.write(data)
    assert cli("run", job.manifest).exit_code == 0
    assert job.state_of() == {"x": "succeeded", "y": "succeeded"}
    ratios = {r["prompt"].split()[2]: r["body"]["generationConfig"]["imageConfig"]["aspectRatio"]
              for r in generation_requests(mock)}
    assert ratios == {"mug": "16:9", "pen": "1:1"}


def test_rerun_after_edits_runs_only_what_changed(job, mock):
    skus = [f"S{i}" for i in range(6)]
    make_products(job, skus)
    rows = [{"sku": s, "title": f"thing {s}"} for s in skus]
    write_catalog(job, rows)
    job.write(catalog_manifest(mock.url))
    assert cli("run", job.manifest).exit_code == 0
    assert len(generation_requests(mock)) == 6

    rows[0]["title"] = "renamed thing"                       # prompt edit -> S0 changes
    Image.new("RGB", (40, 30), "red").save(job.root / "products" / "S1.png")  # new bytes -> S1 changes
    os.utime(job.root / "products" / "S2.png", (1, 1))      # touched, same bytes -> no change
    del rows[3]                                              # removed -> left alone, reported
    rows.append({"sku": "S9", "title": "new thing"})         # new
    make_products(job, skus + ["S9"])
    Image.new("RGB", (40, 30), "red").save(job.root / "products" / "S1.png")
    write_catalog(job, rows)

    plan = cli("validate", job.manifest)
    assert plan.exit_code == 0, plan.stderr
    assert "plan: 1 new, 2 changed, 3 unchanged done, 0 pending, 0 to retry, 0 failed, 1 removed (S3)" in plan.stdout
    assert "estimate: 3 images" in plan.stdout
    assert cli("run", job.manifest).exit_code == 0
    sent = sorted(r["prompt"] for r in generation_requests(mock)[6:])
    assert sent == sorted([
        "Place the renamed thing from image 1 on the marble table in image 2",
        "Place the thing S1 from image 1 on the marble table in image 2",
        "Place the new thing from image 1 on the marble table in image 2",
    ])
    status = json.loads(cli("status", job.manifest, "--json").stdout)
    assert status["items"]["total"] == 6 and status["items"]["removed"] == 1


def decoded_refs(request: dict) -> list[tuple[str, Image.Image]]:
    parts = request["body"]["contents"][0]["parts"][1:]
    return [(p["inline_data"]["mime_type"], Image.open(io.BytesIO(base64.b64decode(p["inline_data"]["data"]))))
            for p in parts]


def test_reference_images_are_normalized_before_sending(job, mock):
    rotated = Image.new("RGB", (60, 20), "blue")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display
    rotated.save(job.root / "rotated.jpg", exif=exif)
    Image.new("P", (30, 30)).save(job.root / "anim.gif")
    Image.new("RGB", (400, 200), "green").save(job.root / "huge.png")
    job.write(manifest(mock.url, [
        {"id": "rot", "prompt": "a", "images": ["rotated.jpg"]},
        {"id": "gif", "prompt": "b", "images": ["anim.gif"]},
        {"id": "big", "prompt": "c", "images": ["huge.png"]},
        {"id": "plain", "prompt": "d", "images": ["images/logo.png"]},
    ], reference_images={"max_side": 150}, limits={"concurrency": 1}))
    assert cli("run", job.manifest).exit_code == 0
    by_prompt = {r["prompt"]: decoded_refs(r)[0] for r in generation_requests(mock)}
    assert by_prompt["a"][1].size == (20, 60)            # EXIF orientation applied
    assert by_prompt["b"][0] == "image/png"              # GIF converted
    assert by_prompt["c"][1].size == (150, 75)           # scaled to max_side
    scene = base64.b64encode((job.root / "images/logo.png").read_bytes()).decode()
    plain = [r for r in generation_requests(mock) if r["prompt"] == "d"][0]
    assert plain["body"]["contents"][0]["parts"][1]["inline_data"]["data"] == scene  # untouched when fine


def test_max_images_stops_at_the_exact_cap_under_concurrency_and_the_next_run_continues(job, mock):
    mock.configure(latency_ms=50)
    job.write(manifest(mock.url, items(12),
                       limits={"concurrency": 4, "max_images": 5}))
    result = cli("run", job.manifest)
    assert result.exit_code == 3, result.stderr
    assert "budget reached" in result.stderr
    assert len(generation_requests(mock)) == 5
    assert list(job.state_of().values()).count("succeeded") == 5
    assert cli("run", job.manifest).exit_code == 3
    assert list(job.state_of().values()).count("succeeded") == 10
    assert cli("run", job.manifest).exit_code == 0
    assert len(generation_requests(mock)) == 12


def test_max_cost_counts_n_images_per_request(job, mock, monkeypatch):
    monkeypatch.setenv("RELAY_KEY", "k")
    data = manifest(mock.url, items(6),
                    limits={"concurrency": 3, "max_cost": 2.0}, network={"allow_private": True})
    data["provider"] = {"kind": "openai_images", "base_url": mock.url, "model": "gemini-3-pro-image-preview",
                        "api_key_env": "RELAY_KEY"}
    data["defaults"] = {"n": 2, "response_format": "b64_json"}
    data["pricing"] = {"per_image": 0.4}
    job.write(data)
    plan = cli("validate", job.manifest)
    assert "estimate: 12 images, 14,520 output tokens, about 4.80 in money" in plan.stdout
    result = cli("run", job.manifest)
    assert result.exit_code == 3 and "max_cost 2" in result.stderr
    assert len(generation_requests(mock)) == 2  # 2 requests × 2 images × 0.4 = 1.6; a third would be 2.4
    assert len(job.sql("SELECT id FROM outputs")) == 4


def test_sample_runs_items_spread_across_the_plan_then_only_runs_chosen_ones(job, mock):
    job.write(manifest(mock.url, items(10)))
    sampled = cli("run", job.manifest, "--sample", "3")
    assert sampled.exit_code == 0, sampled.stderr
    done = {k for k, s in job.state_of().items() if s == "succeeded"}
    assert done == {"i000", "i004", "i009"} or done == {"i000", "i005", "i009"}
    chosen = cli("run", job.manifest, "--only", "i001", "--only", "i002")
    assert chosen.exit_code == 0, chosen.stderr
    done = {k for k, s in job.state_of().items() if s == "succeeded"}
    assert {"i001", "i002"} <= done and len(done) == 5
    rest = cli("run", job.manifest)
    assert rest.exit_code == 0, rest.stderr
    assert len(generation_requests(mock)) == 10


def test_the_example_catalog_job_runs_a_sample_on_the_mock(tmp_path):
    shutil.copytree(ROOT / "jobs" / "catalog", tmp_path / "catalog")
    manifest_path = tmp_path / "catalog" / "catalog.yaml"
    plan = cli("validate", manifest_path)
    assert plan.exit_code == 0, plan.stderr
    assert "ok — job 'spring-catalog-demo', 1200 items" in plan.stdout
    result = cli("run", manifest_path, "--sample", "4")
    assert result.exit_code == 0, result.stderr
    assert "job: 4/1200 succeeded" in result.stderr
