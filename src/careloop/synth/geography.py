"""The region: Hangzhou (杭州市), Zhejiang (浙江省), with its current districts, their real area codes
and the codes they had before (a resident ID keeps the code of the place and time it was issued, so
an older 萧山 resident holds 330121 萧山县 or 330181 萧山市, not today's 330109), a share of residents
born elsewhere in Zhejiang, approximate district centres, postcodes and street names.

Coordinates are rough district centres; homes scatter around them. Distances use the equirectangular
approximation, good to a few percent at this scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from careloop.synth.arrays import FloatArray, IntArray

PROVINCE = "浙江省"
CITY = "杭州市"


@dataclass(frozen=True)
class District:
    name: str
    code: str  # current area code
    lat: float
    lon: float
    radius_km: float  # spread of homes around the centre
    postal: str
    weight: float  # share of the network's patients living here
    #: (first birth year the code applies to, ((code, weight), ...)), oldest era first
    id_codes: tuple[tuple[int, tuple[tuple[str, float], ...]], ...]
    streets: tuple[str, ...]


DISTRICTS: tuple[District, ...] = (
    District("上城区", "330102", 30.255, 120.190, 4.0, "310002", 11,
             ((0, (("330102", 0.6), ("330104", 0.4))), (2021, (("330102", 1.0),))),
             ("解放路", "清泰街", "望江路", "秋涛路", "凤起东路", "新塘路", "景芳路", "钱江路")),
    District("拱墅区", "330105", 30.320, 120.150, 4.0, "310011", 11,
             ((0, (("330105", 0.55), ("330103", 0.45))), (2021, (("330105", 1.0),))),
             ("莫干山路", "湖墅南路", "大关路", "上塘路", "德胜路", "东新路", "体育场路", "朝晖路")),
    District("西湖区", "330106", 30.275, 120.090, 5.0, "310013", 11,
             ((0, (("330106", 1.0),)),),
             ("文三路", "文二路", "天目山路", "古墩路", "留下街", "文一路", "学院路", "教工路")),
    District("滨江区", "330108", 30.205, 120.210, 3.5, "310051", 6,
             ((0, (("330106", 0.7), ("330109", 0.3))), (1996, (("330108", 1.0),))),
             ("江南大道", "滨盛路", "长河路", "江虹路", "西兴路", "浦沿路")),
    District("萧山区", "330109", 30.165, 120.265, 9.0, "311200", 12,
             ((0, (("330121", 1.0),)), (1988, (("330181", 1.0),)), (2001, (("330109", 1.0),))),
             ("市心路", "金城路", "人民路", "育才路", "通惠路", "萧绍路", "建设一路")),
    District("余杭区", "330110", 30.290, 119.990, 8.0, "311121", 9,
             ((0, (("330125", 1.0),)), (1994, (("330184", 1.0),)), (2001, (("330110", 1.0),))),
             ("文一西路", "五常大道", "良睦路", "高教路", "龙潭路", "仓兴街")),
    District("临平区", "330113", 30.420, 120.300, 6.0, "311100", 7,
             ((0, (("330125", 1.0),)), (1994, (("330184", 1.0),)), (2001, (("330110", 1.0),)),
              (2021, (("330113", 1.0),))),
             ("迎宾路", "世纪大道", "南苑街", "人民大道", "星桥路")),
    District("钱塘区", "330114", 30.300, 120.400, 6.0, "310018", 6,
             ((0, (("330104", 0.6), ("330109", 0.4))), (2021, (("330114", 1.0),))),
             ("下沙路", "学林街", "文泽路", "福城路", "义蓬路")),
    District("富阳区", "330111", 30.050, 119.960, 10.0, "311400", 7,
             ((0, (("330123", 1.0),)), (1994, (("330183", 1.0),)), (2014, (("330111", 1.0),))),
             ("金桥路", "富春街", "桂花路", "江滨西大道", "公望路")),
    District("临安区", "330112", 30.235, 119.725, 10.0, "311300", 5,
             ((0, (("330124", 1.0),)), (1996, (("330185", 1.0),)), (2017, (("330112", 1.0),))),
             ("钱王街", "衣锦街", "城中街", "武肃街", "锦城路")),
    District("桐庐县", "330122", 29.795, 119.690, 10.0, "311500", 4,
             ((0, (("330122", 1.0),)),),
             ("迎春南路", "学圣路", "白云源路", "富春路")),
    District("淳安县", "330127", 29.605, 119.040, 12.0, "311700", 3,
             ((0, (("330127", 1.0),)),),
             ("新安大街", "环湖北路", "睦州街", "开发路")),
    District("建德市", "330182", 29.475, 119.280, 12.0, "311600", 3,
             ((0, (("330126", 1.0),)), (1992, (("330182", 1.0),))),
             ("严州大道", "新安东路", "府前路", "江滨路")),
)  # fmt: skip

#: area codes of residents born elsewhere in Zhejiang (宁波 温州 嘉兴 湖州 绍兴 金华 衢州 舟山 台州 丽水)
OTHER_ZHEJIANG_CODES = (
    "330203", "330302", "330402", "330502", "330602", "330702", "330802", "330902", "331002", "331102",
)  # fmt: skip
#: share of residents whose ID was issued elsewhere in Zhejiang
BORN_ELSEWHERE_SHARE = 0.18

ETHNICITIES = ("汉族", "畲族", "回族", "满族", "土家族", "苗族", "壮族")
ETHNICITY_WEIGHTS = (0.985, 0.005, 0.003, 0.002, 0.002, 0.002, 0.001)

_W = np.array([d.weight for d in DISTRICTS], dtype=np.float64)
DISTRICT_WEIGHTS = _W / _W.sum()
DISTRICT_LAT = np.array([d.lat for d in DISTRICTS])
DISTRICT_LON = np.array([d.lon for d in DISTRICTS])
DISTRICT_RADIUS = np.array([d.radius_km for d in DISTRICTS])

#: every area code that can appear in an ID number, in a fixed order
AREA_CODES: tuple[str, ...] = tuple(
    dict.fromkeys(
        [c for d in DISTRICTS for _, era in d.id_codes for c, _ in era] + list(OTHER_ZHEJIANG_CODES)
    )
)
_AREA_INDEX = {c: i for i, c in enumerate(AREA_CODES)}
AREA_CODE_INT = np.array([int(c) for c in AREA_CODES], dtype=np.int64)

STREETS: tuple[str, ...] = tuple(s for d in DISTRICTS for s in d.streets)
_STREET_START = np.cumsum([0] + [len(d.streets) for d in DISTRICTS])[:-1]
_STREET_COUNT = np.array([len(d.streets) for d in DISTRICTS])


def home_locations(rng: np.random.Generator, district: IntArray) -> tuple[FloatArray, FloatArray]:
    """Home (lat, lon) scattered around the district centre."""
    r = DISTRICT_RADIUS[district] * np.sqrt(rng.random(len(district)))
    a = rng.random(len(district)) * 2 * np.pi
    lat = DISTRICT_LAT[district] + r * np.sin(a) / 110.57
    lon = DISTRICT_LON[district] + r * np.cos(a) / (111.32 * np.cos(np.radians(DISTRICT_LAT[district])))
    return lat, lon


def distance_km(lat1: FloatArray, lon1: FloatArray, lat2: FloatArray, lon2: FloatArray) -> FloatArray:
    dy = (lat1 - lat2) * 110.57
    dx = (lon1 - lon2) * 111.32 * np.cos(np.radians((lat1 + lat2) / 2))
    return np.asarray(np.sqrt(dx * dx + dy * dy), dtype=np.float64)


def id_area_codes(rng: np.random.Generator, district: IntArray, birth_year: IntArray) -> IntArray:
    """Index into AREA_CODES of the code on each resident's ID: their district's code valid in their
    birth year, or (for some) another Zhejiang city's."""
    n = len(district)
    out = np.empty(n, dtype=np.int64)
    u = rng.random(n)
    for di, d in enumerate(DISTRICTS):
        in_d = district == di
        for ei, (from_year, choices) in enumerate(d.id_codes):
            to_year = d.id_codes[ei + 1][0] if ei + 1 < len(d.id_codes) else 10_000
            sel = np.flatnonzero(in_d & (birth_year >= from_year) & (birth_year < to_year))
            cdf = np.cumsum([w for _, w in choices])
            pick = np.minimum(np.searchsorted(cdf / cdf[-1], u[sel], side="right"), len(choices) - 1)
            out[sel] = np.array([_AREA_INDEX[c] for c, _ in choices])[pick]
    elsewhere = rng.random(n) < BORN_ELSEWHERE_SHARE
    others = np.array([_AREA_INDEX[c] for c in OTHER_ZHEJIANG_CODES])
    out[elsewhere] = others[rng.integers(0, len(others), int(elsewhere.sum()))]
    return out


def streets_for(rng: np.random.Generator, district: IntArray) -> IntArray:
    """Index into STREETS of a street in each district."""
    out: IntArray = _STREET_START[district] + (rng.random(len(district)) * _STREET_COUNT[district]).astype(
        np.int64
    )
    return out
