"""Every output path of a plan is unique (ignoring case and Unicode form), storable on macOS and
SMB shares, not another job's, and writable: ``validate`` and ``run`` refuse anything else with
one line, exit 2, nothing sent and the database unchanged."""

from __future__ import annotations

import sqlite3
import unicodedata
from pathlib import Path

import pytest
import yaml

from tests.conftest import cli, generation_requests, manifest


def dump(job) -> list[str] | None:
    if not job.db.exists():
        return None
    with sqlite3.connect(job.db) as conn:
        return list(conn.iterdump())


def refused(job, mock, *expected: str, manifest_path: Path | None = None) -> str:
    """Both commands refuse with one line holding ``expected``; nothing sent, nothing written."""
    path = manifest_path or job.manifest
    before, sent = dump(job), len(generation_requests(mock))
    for command in ("validate", "run"):
        result = cli(command, path)
        assert result.exit_code == 2, (command, result.stdout, result.stderr)
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        for text in expected:
            assert text in lines[0], (text, lines[0])
        assert "Traceback" not in result.stdout + result.stderr
    assert len(generation_requests(mock)) == sent
    assert dump(job) == before
    return lines[0]


def openai(url: str, items: list[dict], **extra) -> dict:
    data = manifest(url, items, **extra)
    data["defaults"] = {"size": "1:1", "response_format": "b64_json", "n": 1}
    data["provider"] = {"kind": "openai_images", "base_url": url, "model": "gemini-3-pro-image-preview-2k",
                        "api_key_env": "DMXAPI_KEY"}
    return data


# ------------------------------------------------------------------ unique across the plan


def test_a_constant_filename_over_two_items_is_refused(job, mock):
    job.write(manifest(mock.url, [{"id": "a", "prompt": "p"}, {"id": "b", "prompt": "q"}],
                       output={"filename": "cover.png"}))
    refused(job, mock, "item b: output.filename:", "'cover.png'", "item a")


def test_duplicate_catalog_values_crossed_with_a_matrix_are_refused_naming_rows(job, mock):
    (job.root / "catalog.csv").write_text("id,sku\nr1,S1\nr2,S1\n", encoding="utf-8")
    data = manifest(mock.url, [], output={"filename": "{sku}/{aspect_ratio}.png"})
    del data["items"]
    data.update(items_from={"file": "catalog.csv"}, prompt="p", matrix={"aspect_ratio": ["4:5"]})
    job.write(data)
    refused(job, mock, "catalog.csv: row 3: output.filename: item r2~4:5 writes 'S1/4_5.png'", "item r1~4:5 (row 2)")


def test_a_matrix_whose_values_are_not_in_the_filename_is_refused(job, mock):
    job.write(manifest(mock.url, [{"id": "a", "prompt": "p", "name": "a"}], matrix={"style": ["studio", "lifestyle"]},
                       output={"filename": "{name}.png"}))
    refused(job, mock, "item a~lifestyle: output.filename", "'a.png'", "item a~studio")


def test_the_n_images_of_one_item_count_against_another_item(job, mock):
    job.write(openai(mock.url, [{"id": "a", "prompt": "two", "n": 2}, {"id": "a-1", "prompt": "one"}]))
    refused(job, mock, "item a-1: output.filename:", "'a-1.png'", "item a")


@pytest.mark.parametrize("ids", [("Summer", "summer"),
                                 (unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café"))],
                         ids=["case", "unicode-form"])
def test_names_differing_only_in_case_or_unicode_form_are_one_file(job, mock, ids):
    job.write(manifest(mock.url, [{"id": ids[0], "prompt": "p"}, {"id": ids[1], "prompt": "q"}]))
    refused(job, mock, "output.filename", "same file")


def test_a_file_and_a_folder_of_the_same_name_are_refused(job, mock):
    job.write(manifest(mock.url, [{"id": "a", "prompt": "p", "path": "x.png"},
                                  {"id": "b", "prompt": "q", "path": "x.png/y.png"}],
                       output={"filename": "{path}"}))
    refused(job, mock, "item b: output.filename:", "'x.png/y.png'", "item a", "'x.png'", "folder")


# ------------------------------------------------------------------ names every filesystem can store


def test_characters_macos_and_smb_cannot_store_are_mapped_to_underscores(job, mock):
    job.write(manifest(mock.url, [{"id": "lifestyle-4:5", "prompt": "p", "brand": "Acme Inc. "},
                                  {"id": 'q"<a>|b*?', "prompt": "q", "brand": "x"},
                                  {"id": "con", "prompt": "r", "brand": "y"}],
                       output={"filename": "{brand}/{item}.png"}))
    result = cli("run", job.manifest)
    assert result.exit_code == 0, result.stderr
    assert sorted(p for (p,) in job.sql("SELECT path FROM outputs")) == [
        "Acme Inc/lifestyle-4_5.png", "x/q__a__b__.png", "y/_con.png"]
    assert (job.out / "Acme Inc" / "lifestyle-4_5.png").is_file()


def test_two_names_that_map_to_one_file_are_refused(job, mock):
    job.write(manifest(mock.url, [{"id": "4:5", "prompt": "p"}, {"id": "4_5", "prompt": "q"}]))
    refused(job, mock, "item 4_5: output.filename:", "'4_5.png'", "item 4:5")


def test_a_folder_name_of_only_dots_is_refused(job, mock):
    job.write(manifest(mock.url, [{"id": "a", "prompt": "p", "folder": "..."}],
                       output={"filename": "{folder}/{item}.png"}))
    refused(job, mock, "item a: output.filename:", "'.../a.png'")


def test_the_shipped_catalog_writes_names_every_filesystem_can_store(tmp_path):
    import shutil

    from tests.conftest import ROOT

    shutil.copytree(ROOT / "jobs" / "catalog", tmp_path / "catalog")
    result = cli("run", tmp_path / "catalog" / "catalog.yaml", "--only", "SP26-0299~4:5~lifestyle")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "catalog" / "out" / "SP26-0299" / "lifestyle-4_5.png").is_file()


# ------------------------------------------------------------------ outputs that can never be written


def test_an_output_dir_that_is_a_file_is_refused(job, mock):
    job.write(manifest(mock.url, [{"id": "a", "prompt": "p"}], output={"dir": "results"}))
    (job.root / "results").write_text("not a folder")
    refused(job, mock, "output.dir:", "results", "not a folder")


def test_an_output_dir_below_a_file_is_refused(job, mock):
    job.write(manifest(mock.url, [{"id": "a", "prompt": "p"}], output={"dir": "results/2026"}))
    (job.root / "results").write_text("not a folder")
    refused(job, mock, "output.dir:", "results")


def test_an_existing_folder_under_a_final_name_is_refused(job, mock):
    (job.out / "a.png").mkdir(parents=True)
    job.write(manifest(mock.url, [{"id": "a", "prompt": "p"}]))
    refused(job, mock, "item a: output.filename:", "a.png", "folder")


def test_an_existing_file_where_a_folder_is_needed_is_refused(job, mock):
    job.out.mkdir()
    (job.out / "shots").write_text("a file")
    job.write(manifest(mock.url, [{"id": "a", "prompt": "p"}], output={"filename": "shots/{item}.png"}))
    refused(job, mock, "item a: output.filename:", "shots", "file")


def test_an_item_id_longer_than_a_file_name_may_be_is_refused(job, mock):
    long_id = "x" * 300
    job.write(manifest(mock.url, [{"id": "ok", "prompt": "p"}, {"id": long_id, "prompt": "q"}]))
    refused(job, mock, "item xxxx", "output.filename", "255")


def test_a_field_longer_than_a_folder_name_may_be_is_refused(job, mock):
    job.write(manifest(mock.url, [{"id": "a", "prompt": "p", "brand": "é" * 130}],
                       output={"filename": "{brand}/{item}.png"}))
    refused(job, mock, "item a: output.filename:", "260 bytes")


def test_a_path_longer_than_path_max_is_refused(job, mock):
    deep = "/".join(["d" * 200] * 25)
    job.write(manifest(mock.url, [{"id": "a", "prompt": "p", "deep": deep}],
                       output={"filename": "{deep}/{item}.png"}))
    refused(job, mock, "item a: output.filename:", "bytes long")


def test_a_symlink_inside_the_output_folder_pointing_outside_is_refused(job, mock, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    job.out.mkdir()
    (job.out / "shots").symlink_to(elsewhere, target_is_directory=True)
    job.write(manifest(mock.url, [{"id": "a", "prompt": "p"}], output={"filename": "shots/{item}.png"}))
    refused(job, mock, "item a: output.filename:", "shots", "outside")
    assert list(elsewhere.iterdir()) == []


def test_a_final_name_that_is_a_symlink_pointing_outside_is_refused(job, mock, tmp_path_factory):
    target = tmp_path_factory.mktemp("elsewhere") / "victim.png"
    target.write_bytes(b"precious")
    job.out.mkdir()
    (job.out / "a.png").symlink_to(target)
    job.write(manifest(mock.url, [{"id": "a", "prompt": "p"}]))
    refused(job, mock, "item a: output.filename:", "outside")
    assert target.read_bytes() == b"precious"


def test_a_symlink_pointing_inside_the_output_folder_is_fine(job, mock):
    (job.out / "real").mkdir(parents=True)
    (job.out / "shots").symlink_to(job.out / "real", target_is_directory=True)
    job.write(manifest(mock.url, [{"id": "a", "prompt": "p"}], output={"filename": "shots/{item}.png"}))
    assert cli("run", job.manifest).exit_code == 0
    assert (job.out / "real" / "a.png").is_file()


# ------------------------------------------------------------------ unique across the database


def two_jobs(job, mock, items_b: list[dict] | None = None, **b_output) -> Path:
    """Job A at job.manifest, job B beside it: same folder, default database and output folder."""
    job.write(manifest(mock.url, [{"id": "summer", "prompt": "p"}, {"id": "winter", "prompt": "w"}],
                       job="job-a"))
    b = job.root / "b.yaml"
    data = manifest(mock.url, items_b or [{"id": "summer", "prompt": "other"}], job="job-b")
    data["output"] = {**data["output"], **b_output}
    b.write_text(yaml.safe_dump(data), encoding="utf-8")
    return b


def test_two_manifests_in_one_folder_with_default_settings_cannot_share_an_output(job, mock):
    b = two_jobs(job, mock)
    assert cli("run", job.manifest).exit_code == 0
    summer = (job.out / "summer.png").read_bytes()
    line = refused(job, mock, "item summer: output.filename:", "job 'job-a'", "job 'job-b'", "job.yaml", manifest_path=b)
    assert "summer.png" in line
    assert (job.out / "summer.png").read_bytes() == summer


def test_a_path_another_job_has_planned_but_not_yet_written_is_refused(job, mock):
    b = two_jobs(job, mock, [{"id": "winter", "prompt": "other"}])
    assert cli("run", job.manifest, "--only", "summer").exit_code == 0
    assert not (job.out / "winter.png").exists()
    refused(job, mock, "item winter: output.filename:", "'winter.png'", "job 'job-a'", "job.yaml", manifest_path=b)


def test_another_job_in_an_enclosing_output_folder_is_seen(job, mock):
    b = two_jobs(job, mock, [{"id": "summer", "prompt": "other"}], dir="out/sub")
    job.write(manifest(mock.url, [{"id": "sub/summer", "prompt": "p"}, {"id": "x", "prompt": "x"}], job="job-a"))
    assert cli("run", job.manifest, "--only", "x").exit_code == 0
    refused(job, mock, "item summer: output.filename:", "out/sub/summer.png", "item sub/summer of job 'job-a'",
            manifest_path=b)


def test_jobs_with_their_own_output_folders_share_a_database(job, mock):
    b = two_jobs(job, mock, dir="out-b")
    assert cli("run", job.manifest).exit_code == 0
    assert cli("validate", b).exit_code == 0
    assert cli("run", b).exit_code == 0
    assert (job.root / "out-b" / "summer.png").is_file()
    assert cli("run", job.manifest).exit_code == 0  # and A still runs


def test_an_output_of_a_job_in_another_database_is_recognized_by_its_metadata(job, mock):
    b = two_jobs(job, mock)
    assert cli("run", job.manifest).exit_code == 0
    other_db = job.root / "b.db"
    for command in ("validate", "run"):
        result = cli(command, b, "--db", other_db)
        assert result.exit_code == 2, result.stderr
        assert "item summer: output.filename:" in result.stderr and "job 'job-a'" in result.stderr
        assert len(result.stderr.splitlines()) == 1
    assert len(generation_requests(mock)) == 2


def test_a_rerun_of_the_same_job_is_not_refused_by_its_own_outputs_even_without_its_database(job, mock):
    job.write(manifest(mock.url, [{"id": "a", "prompt": "p"}, {"id": "b", "prompt": "q"}]))
    assert cli("run", job.manifest).exit_code == 0
    assert cli("validate", job.manifest).exit_code == 0
    assert cli("run", job.manifest).exit_code == 0
    result = cli("run", job.manifest, "--db", job.root / "fresh.db")  # its database lost
    assert result.exit_code == 0, result.stderr
    assert len(generation_requests(mock)) == 2  # adopted from disk, not paid again


def test_an_item_named_like_the_numbered_images_of_another_is_refused_where_replies_may_carry_several(job, mock):
    job.write(manifest(mock.url, [{"id": "shirt-2", "prompt": "p"}, {"id": "shirt", "prompt": "q"}]))
    refused(job, mock, "item shirt: output.filename:", "shirt-1.png, shirt-2.png", "item shirt-2", "{n}")


def test_extra_images_of_a_reply_never_overwrite_another_items_output(job, mock):
    mock.configure(images_per_reply=2)
    job.write(manifest(mock.url, [{"id": "shirt", "prompt": "p"}, {"id": "shirt-2", "prompt": "q"}],
                       output={"filename": "{item}_{n}.png"}))
    assert cli("run", job.manifest).exit_code == 0
    paths = [p for (p,) in job.sql("SELECT path FROM outputs")]
    assert sorted(paths) == ["shirt-2_1.png", "shirt-2_2.png", "shirt_1.png", "shirt_2.png"]


def test_numbered_ids_are_fine_for_a_provider_that_makes_exactly_n_images(job, mock):
    job.write(openai(mock.url, [{"id": "shirt-2", "prompt": "p"}, {"id": "shirt", "prompt": "q"}]))
    assert cli("validate", job.manifest).exit_code == 0
