from __future__ import annotations

import csv
from pathlib import Path

import orjson
from typer.testing import CliRunner

from careloop.cli import app

PEOPLE = """病历号,姓名,性别,出生日期,身份证号,手机,地址
A1,王勇宏,男,1971/01/31,330702197101313890,13906086821,浙江省杭州市余杭区仓兴街118号3幢4单元2001室
A2,汪勇宏,男,1971/01/31,,+86 139-0608-6821,余杭区仓兴街118号3幢4单元2001室
A3,王宏勇,M,1971/01/31,330702197101313890,,
A4,刘玲,女,1973/10/30,330125197310301468,15518974214,浙江省杭州市余杭区仓兴街118号3幢4单元2001室
A5,刘玲,F,1973/10/03,,155-1897-4214,
A6,王俊文,男,2002/11/01,,13906086821,浙江省杭州市余杭区仓兴街118号3幢4单元2001室
A7,王俊文,1,2002/11/01,330110200211011799,0086 15892739713,
A8,欧阳娜娜,女,1990/05/06,,13812345678,上城区钱江路453号
A9,欧阳娜娜,2,1990/05/06,,+8613812345678,
A10,,,,,,
A11,陈菊,女,1957/10/07,330122195710078746,13539351303,桐庐县学圣路309号
A12,陈菊,女,1957/10/07,,13539351303,桐庐县学圣路309号
A13,陈菊,女,1932/02/11,,13539351303,桐庐县学圣路309号
"""

MAPPING = """id: 病历号
name: 姓名
sex: 性别
birth_date: 出生日期
birth_date_format: "%Y/%m/%d"
id_number: 身份证号
phone: 手机
address: 地址
encoding: gb18030
"""

runner = CliRunner()


def _files(tmp_path: Path, mapping: str = MAPPING) -> tuple[Path, Path]:
    inp = tmp_path / "people.csv"
    inp.write_bytes(PEOPLE.encode("gb18030"))
    cfg = tmp_path / "map.yaml"
    cfg.write_text(mapping, encoding="utf-8")
    return inp, cfg


def test_dedupe_cli_clusters_typos_formats_and_keeps_every_row(tmp_path: Path) -> None:
    inp, cfg = _files(tmp_path)
    out = tmp_path / "out.csv"
    res = runner.invoke(
        app, ["identity", "dedupe", str(inp), "--config", str(cfg), "--output", str(out), "--json"]
    )
    assert res.exit_code == 0, res.output
    summary = orjson.loads(res.stdout)
    assert summary["rows"] == 13
    with out.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["病历号"] for r in rows] == [f"A{i}" for i in range(1, 14)]
    assert rows[0].keys() >= {"姓名", "出生日期", "手机", "cluster_id", "match_probability"}
    assert rows[1]["手机"] == "+86 139-0608-6821"  # original values untouched
    cluster = {r["病历号"]: r["cluster_id"] for r in rows}
    groups = [["A1", "A2", "A3"], ["A4", "A5"], ["A6", "A7"], ["A8", "A9"], ["A11", "A12"]]
    for g in groups:
        assert {cluster[k] for k in g} == {g[0]}, g
    assert len({cluster[g[0]] for g in groups}) == len(groups)
    # the empty row and the namesake with another birth date stay alone
    assert cluster["A10"] == "A10" and cluster["A13"] == "A13"
    prob = {r["病历号"]: r["match_probability"] for r in rows}
    assert prob["A10"] == "" and prob["A13"] == ""
    assert all(float(prob[k]) >= 0.9 for g in groups for k in g)
    assert summary["clusters"] == 7 and summary["largest_cluster"] == 3
    levels = {c["comparison"]: c["levels"] for c in summary["parameters"]}
    assert set(levels) == {"name", "birth_date", "sex", "phone", "id_number", "address"}
    assert all({"m", "u", "match_weight"} <= lvl.keys() for lvl in levels["name"])


def test_dedupe_cli_table_output(tmp_path: Path) -> None:
    inp, cfg = _files(tmp_path)
    res = runner.invoke(
        app, ["identity", "dedupe", str(inp), "-c", str(cfg), "-o", str(tmp_path / "o.parquet")]
    )
    assert res.exit_code == 0, res.output
    assert "clusters" in res.stdout and (tmp_path / "o.parquet").is_file()


def test_dedupe_bad_key_and_bad_column(tmp_path: Path) -> None:
    inp, cfg = _files(tmp_path, MAPPING + "mobile: 手机\n")
    res = runner.invoke(app, ["identity", "dedupe", str(inp), "-c", str(cfg), "-o", str(tmp_path / "o.csv")])
    assert res.exit_code == 2
    assert "mobile" in res.output and "unknown key" in res.output and "phone" in res.output
    assert "病历号, 姓名" in res.output  # the input's columns, read although the mapping is bad

    inp, cfg = _files(tmp_path, MAPPING.replace("phone: 手机", "phone: 电话"))
    res = runner.invoke(app, ["identity", "dedupe", str(inp), "-c", str(cfg), "-o", str(tmp_path / "o.csv")])
    assert res.exit_code == 2
    assert "电话" in res.output and "手机" in res.output  # names the bad column and lists the input's columns


def test_dedupe_needs_matchable_fields(tmp_path: Path) -> None:
    inp, cfg = _files(tmp_path, "sex: 性别\nencoding: gb18030\n")
    res = runner.invoke(app, ["identity", "dedupe", str(inp), "-c", str(cfg), "-o", str(tmp_path / "o.csv")])
    assert res.exit_code == 2 and "name" in res.output
