"""The matching settings are dialect-free: the same Splink settings score the same pairs on Spark."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import duckdb
import pytest
from splink import DuckDBAPI, Linker

from careloop.identity.matching import quiet_splink, splink_settings
from careloop.identity.standardise import STD_TABLE, standardise

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("pyspark") is None,
        reason="pyspark is not installed (pip install '.[spark]')",
    ),
    pytest.mark.skipif(shutil.which("java") is None, reason="Spark needs a Java runtime (java not on PATH)"),
]

PEOPLE = [
    # name, birth date, sex, phone, id number, address
    ("王勇宏", "1980-05-06", "男", "13800000001", None, "浙江省杭州市滨江区浦沿路1号"),
    ("汪勇宏", "1980-05-06", "男", "13800000001", None, None),
    ("王勇宏", "1980-06-05", "男", None, None, "杭州市滨江区浦沿路1号"),
    ("李秀英", "1952-11-02", "女", "13900000002", None, "浙江省杭州市上城区解放路2号"),
    ("李英秀", "1952-11-02", "女", "13900000002", None, None),
    ("张子涵", "2016-03-09", "女", "13900000002", None, "浙江省杭州市上城区解放路2号"),
    ("陈建国", "1958-01-20", "男", "13700000003", None, None),
    ("陈建国", "1958-01-20", "男", "13700000004", None, "杭州市西湖区文三路3号"),
    ("刘芳", "1990-07-07", "女", "13600000005", None, None),
    ("赵伟", "1985-09-09", "男", "13500000006", None, None),
]


def _pairs_duckdb(con: duckdb.DuckDBPyConnection, columns: list[str]) -> set[tuple[int, int, float]]:
    linker = Linker(DuckDBAPI(connection=con).register(STD_TABLE), splink_settings(columns), log_level=None)
    table = linker.inference.predict(threshold_match_probability=0.5).physical_name
    rows = con.sql(f"SELECT unique_id_l, unique_id_r, match_probability FROM {table}").fetchall()
    return {(int(a), int(b), round(float(p), 6)) for a, b, p in rows}


def test_the_same_settings_score_the_same_pairs_on_spark(tmp_path: Path) -> None:
    from pyspark.sql import SparkSession
    from splink import SparkAPI
    from splink.internals.spark.jar_location import similarity_jar_location

    con = duckdb.connect()
    con.execute(
        "CREATE TABLE people (name VARCHAR, birth VARCHAR, sex VARCHAR, phone VARCHAR, idn VARCHAR, addr VARCHAR)"
    )
    con.executemany("INSERT INTO people VALUES (?, ?, ?, ?, ?, ?)", PEOPLE)
    fields = {"name": "name", "birth_date": "birth", "sex": "sex", "phone": "phone", "id_number": "idn"}
    columns = standardise(con, "people", {**fields, "address": "addr"})
    with quiet_splink():
        expected = _pairs_duckdb(con, columns)
        spark = (
            SparkSession.builder.master("local[2]")
            .config("spark.jars", similarity_jar_location())
            .config("spark.sql.shuffle.partitions", "2")
            .config("spark.ui.enabled", "false")
            .getOrCreate()
        )
        try:
            spark.sparkContext.setLogLevel("ERROR")
            spark.sparkContext.setCheckpointDir(str(tmp_path / "checkpoints"))
            frame = spark.createDataFrame(con.sql(f"SELECT * FROM {STD_TABLE}").to_arrow_table())
            api = SparkAPI(spark_session=spark)
            linker = Linker(api.register(frame), splink_settings(columns), log_level=None)
            predictions = linker.inference.predict(threshold_match_probability=0.5).as_spark_dataframe()
            got = {
                (int(r["unique_id_l"]), int(r["unique_id_r"]), round(float(r["match_probability"]), 6))
                for r in predictions.collect()
            }
        finally:
            spark.stop()
    assert expected, "the example must produce pairs above 0.5"
    assert got == expected
