"""Chinese personal names: frequency-weighted surnames, era- and sex-specific given-name characters, and
the typos that registration clerks and patients make (同音字 homophones, 形近字 look-alikes, swapped
characters).

Surname weights follow the published national frequency ranking (王 李 张 刘 陈 ... in per-mille,
rounded) nudged towards Zhejiang, where 陈, 吴, 徐, 金 and 周 are more common. Given names draw one or two
characters from a pool that depends on sex and birth cohort (建国 / 秀英 for the 1950s, 伟 / 丽 for
the 1980s, 子涵 / 欣怡 after 2000); single-character given names peak in the 1980s-90s cohort.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from careloop.synth.arrays import BoolArray, Column, IntArray, join, pick

#: (surname, weight per mille)
SURNAMES: tuple[tuple[str, float], ...] = (
    ("王", 70), ("李", 68), ("张", 66), ("刘", 52), ("陈", 60), ("杨", 30), ("黄", 24), ("赵", 22),
    ("吴", 26), ("周", 22), ("徐", 20), ("孙", 14), ("马", 11), ("朱", 14), ("胡", 13), ("郭", 10),
    ("何", 10), ("林", 12), ("高", 9), ("罗", 8), ("郑", 10), ("梁", 7), ("谢", 7), ("宋", 6),
    ("唐", 6), ("许", 7), ("韩", 5), ("冯", 5), ("邓", 5), ("曹", 5), ("彭", 5), ("曾", 4),
    ("肖", 4), ("田", 4), ("董", 4), ("袁", 4), ("潘", 5), ("于", 3), ("蒋", 5), ("蔡", 4),
    ("余", 4), ("杜", 3), ("叶", 6), ("程", 4), ("苏", 3), ("魏", 3), ("吕", 3), ("丁", 3),
    ("任", 3), ("沈", 6), ("姚", 4), ("卢", 3), ("姜", 3), ("崔", 2), ("钟", 3), ("谭", 2),
    ("陆", 5), ("汪", 5), ("范", 3), ("金", 7), ("石", 2), ("廖", 2), ("贾", 2), ("夏", 3),
    ("韦", 2), ("付", 2), ("方", 5), ("白", 2), ("邹", 2), ("孟", 2), ("熊", 2), ("秦", 2),
    ("邱", 2), ("江", 3), ("尹", 1.5), ("薛", 1.5), ("闫", 1.5), ("段", 1.5), ("雷", 1.5), ("侯", 1.5),
    ("龙", 1.5), ("史", 1.5), ("陶", 2), ("黎", 1), ("贺", 1.5), ("顾", 3), ("毛", 2.5), ("郝", 1),
    ("龚", 1.5), ("邵", 2.5), ("万", 1), ("钱", 3), ("严", 2), ("覃", 1), ("武", 1), ("戴", 2),
    ("莫", 1), ("孔", 1), ("向", 1), ("汤", 1.5), ("楼", 1.5), ("应", 1.5), ("俞", 2.5), ("童", 1.5),
    ("鲍", 1), ("翁", 1), ("屠", 0.6), ("柳", 0.8), ("傅", 2), ("施", 1.5), ("萧", 0.5), ("虞", 0.5),
)  # fmt: skip

#: given-name character pools: (sex, cohort) -> characters (repeats weight a character)
_POOLS: dict[tuple[str, int], str] = {
    ("male", 0): "国建华明文平志德军永福海金荣成林生祥富贵庆忠光伟春兴连宝根水龙发良辉云根土法松福民",
    ("female", 0): "秀英兰芳珍玉凤桂华美红梅霞丽琴娥萍菊翠淑芬云香月彩银仙娟珠莲素爱金花月英兰秀",
    ("male", 1): "伟强军勇杰涛斌超明刚平辉鹏华飞波峰磊亮俊建东海林文志宏晓剑锋健彬军勇伟涛斌浩",
    ("female", 1): "芳娜敏静丽艳娟霞秀玲燕萍红琳晶婷慧颖雪莉洁琴蕾倩丹晓燕敏静丽芳婷佳",
    ("male", 2): "浩宇轩子涵博文泽俊杰睿哲昊天一航晨鑫凯皓锦程明煜铭逸嘉豪思远梓辰宇浩轩泽",
    ("female", 2): "欣怡雨涵梓萱子琪诗语晨彤佳悦可馨一诺思嘉紫若依妍梦婷钰琳瑶涵欣怡雨佳",
}

#: birth-year cohorts: before 1965, 1965-1989, from 1990
COHORT_BOUNDS = (1965, 1990)
#: share of one-character given names per cohort
SINGLE_CHAR_SHARE = (0.10, 0.24, 0.07)

#: groups of characters that are confused with each other (same or near pronunciation in
#: Mandarin or Wu dialect, or similar shape); a typo replaces a character by another of its group
_CONFUSABLE_GROUPS: tuple[str, ...] = (
    # surnames
    "张章", "王汪黄", "李黎", "刘柳", "陈程成", "杨阳", "吴胡伍", "周邹", "徐许", "朱祝诸", "何贺",
    "林凌", "罗骆", "萧肖", "于余俞虞", "卢陆鲁", "蒋江姜", "魏卫韦", "闫阎严颜", "石史施",
    "邱丘秋", "金靳", "傅付符", "谭覃", "钟仲", "唐汤", "冯封", "范樊", "方房", "袁元", "沈申",
    "曾郑", "顾谷", "侯候", "尹殷", "龚宫", "叶业", "应英", "楼娄", "童佟", "翁温",
    # given-name characters
    "伟玮炜韦", "静婧靖", "丽莉俐", "敏珉", "杰洁捷", "军君钧均", "华桦骅", "明鸣铭", "玲琳林霖",
    "芳方舫", "娟鹃涓", "红虹宏鸿洪", "平萍苹", "刚钢纲", "勇涌永咏", "英瑛颖莹盈", "慧惠蕙辉晖",
    "建剑健坚", "文雯闻", "志智治", "斌彬滨宾", "峰锋丰枫", "亮良靓", "雪学", "梅玫媚", "霞侠夏",
    "燕艳彦雁妍", "波博柏", "涛韬滔", "超朝", "浩昊皓豪", "宇雨羽语玉钰煜昱", "欣鑫新馨昕心",
    "婷庭廷亭", "佳嘉家", "俊骏峻", "凯恺楷", "磊蕾", "晨辰臣", "怡宜仪依艺", "子梓紫姿",
    "涵晗寒含", "轩萱宣暄", "睿瑞锐蕊", "琪琦奇淇祺", "晓小筱", "秀绣", "兰岚澜蓝", "云芸韵昀",
    "凤风", "珍真贞", "玉王", "琴勤芹", "菊桔", "翠萃", "淑叔", "芬芳", "月悦越", "彩采",
    "国果", "荣容蓉", "成诚城承", "生升", "祥翔详", "富福", "贵桂", "庆清", "忠中", "光广",
    "春纯", "兴星幸", "连莲廉", "宝保", "根耕", "海凯", "东冬", "鹏朋", "飞菲", "晶精", "洁杰",
    "倩茜", "丹单", "一依", "航杭", "锦金", "程诚", "铭明", "逸毅", "思斯", "远源", "诗施",
    "彤桐", "悦越", "可柯", "诺娜", "若偌", "妍研", "梦孟", "瑶遥", "哲喆", "天田", "泽则",
    "博柏", "民敏", "松嵩", "法发", "土士", "仙先", "珠朱", "素苏", "爱艾", "花华", "娥蛾",
)  # fmt: skip


def _build() -> tuple[list[str], dict[tuple[str, int], np.ndarray], np.ndarray, np.ndarray]:
    chars: list[str] = []
    index: dict[str, int] = {}

    def add(c: str) -> int:
        if c not in index:
            index[c] = len(chars)
            chars.append(c)
        return index[c]

    for s, _ in SURNAMES:
        add(s)
    pools = {k: np.array([add(c) for c in v], dtype=np.int64) for k, v in _POOLS.items()}
    for group in _CONFUSABLE_GROUPS:
        for c in group:
            add(c)
    width = max(len(g) for g in _CONFUSABLE_GROUPS)
    alts = np.full((len(chars), width), -1, dtype=np.int64)
    count = np.zeros(len(chars), dtype=np.int64)
    for group in _CONFUSABLE_GROUPS:
        for c in group:
            i = index[c]
            for other in group:
                j = index[other]
                if j != i and j not in alts[i, : count[i]]:
                    alts[i, count[i]] = j
                    count[i] += 1
    return chars, pools, alts, count


CHARS, _POOL_INDEX, _ALTS, _ALT_COUNT = _build()
_CHAR_COLUMN = pa.array([*CHARS, ""], type=pa.string())  # index len(CHARS) = "" (no second char)
NO_CHAR = len(CHARS)
_SURNAME_WEIGHTS = np.array([w for _, w in SURNAMES], dtype=np.float64)
_SURNAME_CDF = np.cumsum(_SURNAME_WEIGHTS / _SURNAME_WEIGHTS.sum())


def cohort_of(birth_year: IntArray) -> IntArray:
    return np.searchsorted(np.array(COHORT_BOUNDS), birth_year, side="right").astype(np.int64)


def surnames(rng: np.random.Generator, n: int) -> IntArray:
    """Surname character indices, frequency-weighted."""
    return np.minimum(np.searchsorted(_SURNAME_CDF, rng.random(n), side="right"), len(SURNAMES) - 1)


def given_names(
    rng: np.random.Generator, female: BoolArray, birth_year: IntArray
) -> tuple[IntArray, IntArray]:
    """(first, second) given-name character indices; second is NO_CHAR for one-character names."""
    n = len(female)
    cohort = cohort_of(birth_year)
    first = np.empty(n, dtype=np.int64)
    second = np.empty(n, dtype=np.int64)
    for (sex, c), pool in _POOL_INDEX.items():
        sel = np.flatnonzero((female == (sex == "female")) & (cohort == c))
        first[sel] = pool[rng.integers(0, len(pool), len(sel))]
        second[sel] = pool[rng.integers(0, len(pool), len(sel))]
    single = rng.random(n) < np.array(SINGLE_CHAR_SHARE)[cohort]
    second[single] = NO_CHAR
    return first, second


def distinct_in_household(
    household: IntArray,
    surname: IntArray,
    first: IntArray,
    second: IntArray,
    female: BoolArray,
    birth_year: IntArray,
) -> IntArray:
    """First given-name characters such that no two members of a household share one full name.

    Chinese families do not name a child after a parent or grandparent (避讳), nor two siblings alike;
    independent draws do so about 3 times in 10,000 households. A member whose full name an earlier
    member already has takes the next character of their own pool that makes the name new. No random
    draws: the rest of the network is what it was."""
    key = np.stack([household, surname, first, second], axis=1)
    _, first_row, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    dup = np.flatnonzero(first_row[inverse.reshape(-1)] != np.arange(len(first)))
    out = first.copy()
    if not len(dup):
        return out
    cohort = cohort_of(birth_year)
    for i in dup.tolist():
        members = np.flatnonzero(household == household[i])
        taken = {(int(surname[j]), int(out[j]), int(second[j])) for j in members if j != i}
        pool = _POOL_INDEX[("female" if female[i] else "male", int(cohort[i]))]
        where = np.flatnonzero(pool == out[i])
        start = int(where[0]) if len(where) else 0
        for step in range(1, len(pool) + 1):
            c = int(pool[(start + step) % len(pool)])
            if c != out[i] and (int(surname[i]), c, int(second[i])) not in taken:
                out[i] = c
                break
    return out


def confuse(rng: np.random.Generator, chars: IntArray, apply: BoolArray) -> IntArray:
    """Replace characters by a confusable one (homophone / look-alike) where `apply` and one exists."""
    out = chars.copy()
    safe = np.where(chars == NO_CHAR, 0, chars)
    has = apply & (chars != NO_CHAR) & (_ALT_COUNT[safe] > 0)
    idx = np.flatnonzero(has)
    choice = (rng.random(len(idx)) * _ALT_COUNT[safe[idx]]).astype(np.int64)
    out[idx] = _ALTS[safe[idx], choice]
    return out


def name_text(surname: IntArray, first: IntArray, second: IntArray) -> Column:
    """Full names as text: surname + given name."""
    return join(pick(_CHAR_COLUMN, surname), pick(_CHAR_COLUMN, first), pick(_CHAR_COLUMN, second))


def noisy_name(
    rng: np.random.Generator,
    surname: IntArray,
    first: IntArray,
    second: IntArray,
    typo_rate: float,
    swap_rate: float,
) -> tuple[Column, BoolArray]:
    """Names as one source writes them, with homophone typos and swapped given-name characters.

    Returns the text and a flag of the rows that differ from the true name.
    """
    n = len(surname)
    typo = rng.random(n) < typo_rate
    where_typo = rng.integers(0, 3, n)  # 0 surname, 1 first, 2 second given character
    s = confuse(rng, surname, typo & (where_typo == 0))
    f = confuse(rng, first, typo & (where_typo == 1))
    g = confuse(rng, second, typo & (where_typo == 2))
    swap = (rng.random(n) < swap_rate) & (second != NO_CHAR) & (first != second)
    f2 = np.where(swap, g, f)
    g2 = np.where(swap, f, g)
    changed = (s != surname) | (f2 != first) | (g2 != second)
    return name_text(s, f2, g2), changed
