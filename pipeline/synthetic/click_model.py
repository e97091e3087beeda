"""The synthetic world: user and item tables and the true click / conversion probabilities.

A ``World`` is drawn once from the seed (small tables: ``num_users`` users, ``num_items``
items, ``NUM_TAGS`` tags); ``World.impressions(block)`` then draws a fixed-size block of
impressions from its own random stream, so a row's content depends only on (seed, row
index), never on how the rows are chunked into files.

**Who saw what.** Per impression of user ``u`` (drawn by activity): a session intent
category ``s ~ pi_u`` (``pi_u`` = 0.6 Dirichlet(1) + 0.4 the categories' popularity mass,
so it varies a lot from one impression of ``u`` to the next), and a behaviour history
``h_1 .. h_L`` (``hist_items``, MOST RECENT LAST, ``L`` in 0..``HISTORY_MAX``: empty with
probability 0.06, else Poisson(Gamma(shape 2, scale m_u / 2)), m_u = 12 exp(0.5 act_u),
capped; median 11, mean 15, 90th percentile 35 at the defaults). The item at age ``g``
(g = L - j: 0 for the most recent) is, with probability 0.2, a re-visit of the item
Geometric(0.3) (>= 1) positions older in the same history (or its oldest); otherwise
drawn by popularity inside category ``s`` with probability 0.8 exp(-g / 4) (the recent
items reveal the intent), else inside a category drawn from ``pi_u``. The target item
``i``: with probability 0.12 one of the recent history items (age Geometric(0.35) - 1),
with 0.25 a popular item of the intent category, else by popularity (as before).
``item_tags``: each item has 1..4 distinct tags ``t_ik`` of ``NUM_TAGS`` (mostly from its
category's 5 home tags) with base weights ``b_ik`` in [0.1, 1]; each impression shows them
with relevance weights ``w_ik = clip(b_ik exp(z - 1/2), 0.01, 1)``, z ~ N(0, 1) per tag and
impression, 2 decimals (as written: the oracle uses the written weights).

**The probabilities** (``a`` = ``interaction_scale``, ``rho`` = ``task_correlation``, ``d`` =
``latent_dim``; ``act_u`` is the user's standardized log activity, ``rel`` the impression's
log price minus its category's, ``x`` the observed context [cos, sin of the hour, device
one-hot, act_u])::

    phi_k(x)  = cos(w_k . x + c_k), k = 1..d       random features, w_k ~ N(0, 0.4^2)
    V_i       = sqrt(1 - 0.2^2) C_category(i) + 0.2 E_i   item latent (mostly its category's)
    r_j       = exp(-(L - j) / 10)                 recency weight of history position j
    S_rep     = sum_j r_j [h_j == i]               repeat interest: the target itself, recently
    S_cat     = sum_j r_j [cat(h_j) == cat(i)]     session interest: the target's category
    H_raw     = 2 tanh(S_rep) + tanh(S_cat / 2)    history x target kernel (sharp, per item)
    T_raw     = sum_k w_ik (g[t_ik] + pref[u, t_ik])   tags' appeal and the user's tag taste
    aff       = <phi(x), V_i> + 0.1 <U_u, V_i>     user x item affinity, each part scaled to std 1
    aff1      = aff + 0.8 H + 0.45 T               H, T: H_raw, T_raw standardized (mean 0, std 1)
    logit(p_click) = b_click + a * aff1 + b_u + b_i + DH[device, hour]
                     + 0.3 [device == favourite_device_u] - 0.5 exp(-0.3 act_u) rel / 0.4
    logit(p_cvr | click) = b_cvr + a * (rho * aff1 + sqrt(1 - rho^2) * aff2)
                     + 0.5 quality_i - 0.8 rel / 0.4 + 0.3 tanh(tenure_z_u) + 0.5 b_u
    p_conversion = p_click * p_cvr                 (per impression)

``g[t]`` ~ N(0, 1.5^2) is a tag's appeal to everyone; ``pref[u]`` is N(0, 0.3^2) per tag plus
U(0.8, 1.6) on 3 favourite tags of the user.
``aff1`` (with the history and tag terms, which conversion so shares through ``rho``) and
``aff2`` (an independent ``aff``: its own frequencies, item and user latents) are mixed with
weights ``rho`` and ``sqrt(1 - rho^2)`` (the MMoE paper's construction). The affinity is
rank ``d`` in the item latent: a model whose item / category embeddings are narrower than
``d`` (the 4-dim student) cannot represent it, a 16-dim one (the teacher) can. ``H`` is a
sum over individual history items of a sharp kernel with the target (exact item match,
same category): a target-attention pooling of the history can represent it, a mean of the
history's embeddings only roughly (a share of same-category items, no exact matches); and
it varies per impression (the intent ``s``, the re-visits), so ``user_id`` cannot stand in
for it. ``T`` varies per impression through the relevance weights, which ``item_id`` cannot
tell (only E[w_ik]); the rest of it is a fixed function of (user, item) that ids could learn
in the limit (its user x tag part has rank 40: a rank-16 approximation holds ~70% of its
variance). ``b_click`` and ``b_cvr`` are solved by bisection on a calibration
sample so the mean click rate is ``click_rate`` and the mean conversion per impression
``conversion_rate`` (the standardizations of ``aff``, ``H`` and ``T`` use the same sample).
Every term is a function of the observed columns. The numeric columns are views of the
latent tables: ``user_activity`` reveals act_u (and most of b_u = 0.4 act_u + noise),
``item_rating`` reveals quality_i, ``user_tenure_days`` the tenure, ``item_popularity`` the
item's sampling weight. bench/synthetic_difficulty.py measures how much of this a
full-size and a small model learn, and what each term is worth to the oracle.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

BLOCK_ROWS = 10_000  # impressions drawn per random stream; fixed so output is chunk-independent
DEVICES = np.array(["android", "ios", "web", "tablet"])
COLUMNS = [
    "impression_id", "user_id", "item_id", "item_category", "device", "hour", "price",
    "user_activity", "user_tenure_days", "item_popularity", "item_rating",
    "hist_items", "item_tags",
    "click", "conversion", "p_click", "p_conversion",
]
# List columns, as their CSV field: the values joined by LIST_SEPARATOR ("" for an empty list;
# the generator writes Parquet list<string>). hist_items: item ids, most recent last;
# item_tags: "t<k>:<weight>" tokens in the item's order (heaviest base weight first).
LIST_COLUMNS = ("hist_items", "item_tags")
LIST_SEPARATOR = "|"
HISTORY_MAX = 50  # longest behaviour history
NUM_TAGS = 40
TAGS_PER_ITEM_MAX = 4
_CALIBRATION_BLOCKS = 5
_WORLD, _BLOCK, _CALIBRATION = 0, 1, 2  # random stream ids
_CONTEXT_DIMS = 7  # hour (cos, sin), device one-hot (4), user activity
_NONLINEARITY = 0.4  # std of the random-feature frequencies: higher, wigglier affinities
_ITEM_SHARE = 0.2  # weight of the per-item part of an item latent (the rest: its category's)
_ID_SHARE = 0.1  # weight of the user-id latent affinity next to the context affinity
# Behaviour histories (see the module docstring).
_HISTORY_EMPTY = 0.06  # probability of an empty history (besides Poisson zeros)
_HISTORY_MEAN = 12.0  # mean length at act_u = 0 (times exp(0.5 act_u))
_HISTORY_SHAPE = 2.0  # Gamma shape of the length's Poisson rate: lengths are over-dispersed
_INTENT_SHARE = 0.6  # weight of a user's own Dirichlet taste in pi_u (the rest: popularity mass)
_INTENT_RECENT = 0.8  # P(history item of the intent category) at age 0 ...
_INTENT_DECAY = 4.0  # ... decaying as exp(-age / this)
_INTENT_BY_AGE = _INTENT_RECENT * np.exp(-np.arange(HISTORY_MAX) / _INTENT_DECAY)
_REVISIT = 0.2  # P(a history item re-visits an older one of the same history)
_REVISIT_GAP = 0.3  # Geometric parameter of how many positions older the re-visited item is
_TARGET_REPEAT = 0.12  # P(target = a recent history item) ...
_TARGET_REPEAT_AGE = 0.35  # ... at age Geometric(this) - 1
_TARGET_INTENT = 0.25  # P(target = a popular item of the intent category)
# The history x target kernel and the weights of H and T in the click affinity.
_RECENCY = 10.0  # r_j = exp(-age / this)
_RECENCY_WEIGHTS = np.exp(-np.arange(HISTORY_MAX) / _RECENCY)
_REPEAT_WEIGHT, _CATEGORY_WEIGHT, _CATEGORY_SCALE = 2.0, 1.0, 2.0
_HISTORY_WEIGHT = 0.8
_TAG_WEIGHT = 0.45
# Tags.
_HOME_TAGS = 5  # tags typical of a category
_HOME_TAG_SHARE = 0.7  # P(an item's tag is one of its category's home tags)
_TAGS_PER_ITEM_P = (0.25, 0.35, 0.25, 0.15)  # P(1, 2, 3, 4 tags)
_FAVOURITE_TAGS = 3
_TAG_APPEAL = 1.5  # std of a tag's appeal to everyone, g[t]
_RELEVANCE_SPREAD = 1.0  # per impression, w_ik = b_ik exp(this z - this^2 / 2), z ~ N(0, 1), clipped to [0.01, 1]
_WEIGHT_TEXT = np.array([f"{k / 100:g}" for k in range(101)], dtype=object)  # "0", "0.01", ..., "1"
# The optional terms of the click affinity aff1 (World.logits): the two parts of H (repeat:
# 2 tanh(S_rep), category: tanh(S_cat / 2)) and T; "history" stands for both parts of H,
# "expected_tags" for T with the expected relevance weights (what user and item alone tell).
TERMS = ("repeat", "category", "tags")


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _solve_bias(target: float, mean_at) -> float:
    """The bias b with mean_at(b) == target (mean_at increasing in b), by bisection."""
    lo, hi = -30.0, 30.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if mean_at(mid) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@dataclass
class _Affinity:
    """One task's user x item affinity: context random features and an id latent, each std 1."""

    w: np.ndarray  # (context dims, d) random-feature frequencies
    c: np.ndarray  # (d,) random-feature phases
    item: np.ndarray  # (items, d) item latents: per-category part + per-item part
    user: np.ndarray  # (users, d) user id latents
    context_std: float = 1.0
    id_std: float = 1.0

    @classmethod
    def draw(cls, rng, n_users, item_category, n_categories, d) -> "_Affinity":
        category = rng.normal(0.0, 1.0, (n_categories, d))
        item = math.sqrt(1 - _ITEM_SHARE**2) * category[item_category] + _ITEM_SHARE * rng.normal(0.0, 1.0, (len(item_category), d))
        return cls(
            w=rng.normal(0.0, _NONLINEARITY, (_CONTEXT_DIMS, d)),
            c=rng.uniform(0.0, 2 * math.pi, d),
            item=item,
            user=rng.normal(0.0, 1.0, (n_users, d)),
        )

    def raw(self, context: np.ndarray, user: np.ndarray, item: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        features = np.cos(context @ self.w + self.c)
        v = self.item[item]
        return np.einsum("nd,nd->n", features, v), np.einsum("nd,nd->n", self.user[user], v)

    def __call__(self, context, user, item) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.raw(context, user, item)
        return a / self.context_std, b / self.id_std


def _alias_tables(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker / Vose alias tables of each row of ``p`` (rows, k): draw ``j`` uniform in 0..k-1,
    keep it with probability ``prob[row, j]``, else take ``alias[row, j]`` (O(1) per draw)."""
    rows, k = p.shape
    prob, alias = np.ones((rows, k)), np.tile(np.arange(k), (rows, 1))
    for r in range(rows):
        scaled = (p[r] * (k / p[r].sum())).tolist()
        small = [j for j, v in enumerate(scaled) if v < 1.0]
        large = [j for j, v in enumerate(scaled) if v >= 1.0]
        while small and large:
            s, g = small.pop(), large[-1]
            prob[r, s], alias[r, s] = scaled[s], g
            scaled[g] -= 1.0 - scaled[s]
            if scaled[g] < 1.0:
                small.append(large.pop())
    return prob, alias


def _alias_draw(rng, prob: np.ndarray, alias: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """One column index per entry of ``rows``, drawn from that row of ``_alias_tables``."""
    k = prob.shape[1]
    j = rng.integers(0, k, len(rows))
    at = rows * k + j
    return np.where(rng.random(len(rows)) < prob.ravel()[at], j, alias.ravel()[at])


def _relevance(base: np.ndarray, z: np.ndarray) -> np.ndarray:
    """The per-impression relevance weight of a tag of base weight ``base`` (2 decimals)."""
    return np.round(np.clip(base * np.exp(_RELEVANCE_SPREAD * z - _RELEVANCE_SPREAD**2 / 2), 0.01, 1.0), 2)


def _expected_relevance(base: np.ndarray) -> np.ndarray:
    """E[_relevance(base, z)] over z ~ N(0, 1), by quadrature (rounding aside); 0 stays 0."""
    z, w = np.polynomial.hermite_e.hermegauss(64)
    weights = w / w.sum()
    out = np.tensordot(np.clip(base[..., None] * np.exp(_RELEVANCE_SPREAD * z - _RELEVANCE_SPREAD**2 / 2), 0.01, 1.0), weights, axes=1)
    return np.where(base > 0, out, 0.0)


@dataclass
class World:
    """Latent user / item tables of one seed; see the module docstring for the math."""

    seed: int
    interaction_scale: float
    task_correlation: float
    click_affinity: _Affinity
    cvr_affinity: _Affinity
    user_activity_z: np.ndarray  # standardized log activity (observed as user_activity)
    user_tenure_z: np.ndarray  # standardized log1p tenure (observed as user_tenure_days)
    user_bias: np.ndarray
    user_device: np.ndarray
    user_peak: np.ndarray  # favourite hour
    user_activity: np.ndarray
    user_tenure: np.ndarray
    user_weight: np.ndarray  # impression sampling probabilities
    user_category_prob: np.ndarray  # (users, categories) alias tables of pi_u: draws of intent / history categories
    user_category_alias: np.ndarray
    user_tag_pref: np.ndarray  # (users, NUM_TAGS) pref[u, t]
    item_bias: np.ndarray
    item_category: np.ndarray
    item_log_price: np.ndarray
    category_log_price: np.ndarray
    item_quality: np.ndarray
    item_rating: np.ndarray
    item_popularity: np.ndarray
    item_weight: np.ndarray
    item_tag_ids: np.ndarray  # (items, TAGS_PER_ITEM_MAX) tag ids t_ik (padding: tag 0 ...
    item_tag_base: np.ndarray  # ... with base weight 0) and base weights b_ik, heaviest first
    item_tag_count: np.ndarray  # (items,) tags per item
    tag_appeal: np.ndarray  # (NUM_TAGS,) g[t]
    tag_tokens: np.ndarray  # (NUM_TAGS * 101,) "t<k>:<w>" for each tag and weight 0.00..1.00 (object array)
    tag_tokens_after: np.ndarray  # the same with LIST_SEPARATOR before
    item_names: np.ndarray  # per item: "i<k>" + LIST_SEPARATOR (object array)
    item_name_length: np.ndarray  # their lengths
    category_items: np.ndarray  # (categories, most items in one) item ids per category (padded) ...
    category_item_prob: np.ndarray  # ... and alias tables of their popularity (padding: weight 0)
    category_item_alias: np.ndarray
    device_hour: np.ndarray  # (devices, 24)
    click_bias: float = 0.0
    cvr_bias: float = 0.0
    history_mean: float = 0.0  # H = (H_raw - history_mean) / history_std
    history_std: float = 1.0
    tag_mean: float = 0.0  # T = (T_raw - tag_mean) / tag_std
    tag_std: float = 1.0

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls, s) -> "World":
        """Draws the tables for a ``SyntheticConfig`` ``s`` and calibrates biases and scales."""
        rng = np.random.default_rng([s.seed, _WORLD])
        nu, ni, nc, d = s.num_users, s.num_items, s.num_categories, s.latent_dim
        activity_z = rng.normal(0.0, 1.0, nu)
        tenure = np.round(rng.exponential(400.0, nu), 1)
        tenure_z = (np.log1p(tenure) - 5.4) / 1.2
        category_p = 1.0 / np.arange(1, nc + 1) ** 0.7
        item_category = rng.choice(nc, ni, p=category_p / category_p.sum())
        category_log_price = rng.normal(3.0, 0.8, nc)
        item_quality = rng.normal(0.0, 1.0, ni)
        popularity = 1.0 / (rng.permutation(ni) + 10.0) ** 0.9
        popularity /= popularity.sum()
        activity = np.exp(0.6 * activity_z)
        click_affinity = _Affinity.draw(rng, nu, item_category, nc, d)
        cvr_affinity = _Affinity.draw(rng, nu, item_category, nc, d)
        scalars = dict(
            user_bias=0.4 * activity_z + rng.normal(0.0, 0.2, nu),
            user_device=rng.integers(0, len(DEVICES), nu),
            user_peak=rng.uniform(0.0, 24.0, nu),
            item_bias=rng.normal(0.0, 0.2, ni),
            item_log_price=category_log_price[item_category] + rng.normal(0.0, 0.4, ni),
            item_rating=np.round(np.clip(3.5 + 0.7 * item_quality + rng.normal(0.0, 0.2, ni), 1.0, 5.0), 2),
            item_popularity=np.round(popularity * ni * np.exp(rng.normal(0.0, 0.2, ni)), 4),
            device_hour=rng.normal(0.0, 0.3, (len(DEVICES), 24)),
        )
        # Histories: the users' category tastes and per-category popularity draws.
        category_mass = np.bincount(item_category, weights=popularity, minlength=nc)
        taste = rng.dirichlet(np.ones(nc), nu) * (category_mass > 0)
        taste /= taste.sum(axis=1, keepdims=True)
        pi = _INTENT_SHARE * taste + (1 - _INTENT_SHARE) * category_mass / category_mass.sum()
        user_category = _alias_tables(pi)
        members = [np.flatnonzero(item_category == c) for c in range(nc)]
        width = max(len(m) for m in members)
        category_items = np.zeros((nc, width), dtype=np.int64)
        within = np.zeros((nc, width))
        for c, m in enumerate(members):
            category_items[c, :len(m)], within[c, :len(m)] = m, popularity[m]
        within[category_mass == 0, 0] = 1.0  # never drawn (pi_u is 0 there); keeps the table finite
        category_item = _alias_tables(within)
        # Tags: per item 1..4 distinct tags, mostly its category's home tags.
        home = np.stack([rng.choice(NUM_TAGS, _HOME_TAGS, replace=False) for _ in range(nc)])
        counts = rng.choice(len(_TAGS_PER_ITEM_P), ni, p=_TAGS_PER_ITEM_P) + 1
        tag_ids = np.zeros((ni, TAGS_PER_ITEM_MAX), dtype=np.int64)
        tag_weights = np.zeros((ni, TAGS_PER_ITEM_MAX))
        for i in range(ni):
            p_tag = np.full(NUM_TAGS, (1 - _HOME_TAG_SHARE) / NUM_TAGS)
            p_tag[home[item_category[i]]] += _HOME_TAG_SHARE / _HOME_TAGS
            tags = rng.choice(NUM_TAGS, counts[i], replace=False, p=p_tag)
            w = np.sort(np.round(rng.uniform(0.1, 1.0, counts[i]), 2))[::-1]
            tag_ids[i, :counts[i]], tag_weights[i, :counts[i]] = tags, w
        pref = rng.normal(0.0, 0.3, (nu, NUM_TAGS))
        favourite = np.argsort(rng.random((nu, NUM_TAGS)), axis=1)[:, :_FAVOURITE_TAGS]
        pref[np.arange(nu)[:, None], favourite] += rng.uniform(0.8, 1.6, (nu, _FAVOURITE_TAGS))
        appeal = rng.normal(0.0, _TAG_APPEAL, NUM_TAGS)
        world = cls(
            seed=s.seed,
            interaction_scale=s.interaction_scale,
            task_correlation=s.task_correlation,
            click_affinity=click_affinity,
            cvr_affinity=cvr_affinity,
            user_activity_z=activity_z,
            user_tenure_z=tenure_z,
            user_activity=np.round(5.0 * activity, 3),
            user_tenure=tenure,
            user_weight=activity / activity.sum(),
            user_category_prob=user_category[0],
            user_category_alias=user_category[1],
            user_tag_pref=pref,
            item_category=item_category,
            category_log_price=category_log_price,
            item_quality=item_quality,
            item_weight=popularity,
            item_tag_ids=tag_ids,
            item_tag_base=tag_weights,
            item_tag_count=counts,
            tag_appeal=appeal,
            tag_tokens=np.array([f"t{t}:{v}" for t in range(NUM_TAGS) for v in _WEIGHT_TEXT], dtype=object),
            tag_tokens_after=np.array([f"{LIST_SEPARATOR}t{t}:{v}" for t in range(NUM_TAGS) for v in _WEIGHT_TEXT], dtype=object),
            item_names=np.array([f"i{k}{LIST_SEPARATOR}" for k in range(ni)], dtype=object),
            item_name_length=np.array([len(f"i{k}{LIST_SEPARATOR}") for k in range(ni)], dtype=np.int64),
            category_items=category_items,
            category_item_prob=category_item[0],
            category_item_alias=category_item[1],
            **scalars,
        )
        world._calibrate(s.click_rate, s.conversion_rate)
        return world

    def _calibrate(self, click_rate: float, conversion_rate: float) -> None:
        draws = [self._draw(np.random.default_rng([self.seed, _CALIBRATION, b])) for b in range(_CALIBRATION_BLOCKS)]
        for aff in (self.click_affinity, self.cvr_affinity):
            parts = [aff.raw(self._context(x), x["user"], x["item"]) for x in draws]
            aff.context_std = float(np.concatenate([p[0] for p in parts]).std()) or 1.0
            aff.id_std = float(np.concatenate([p[1] for p in parts]).std()) or 1.0
        h = np.concatenate([self.history_raw(x) for x in draws])
        t = np.concatenate([self.tags_raw(x) for x in draws])
        self.history_mean, self.history_std = float(h.mean()), float(h.std()) or 1.0
        self.tag_mean, self.tag_std = float(t.mean()), float(t.std()) or 1.0
        logits = [self.logits(x) for x in draws]
        zc = np.concatenate([z[0] for z in logits])
        zv = np.concatenate([z[1] for z in logits])
        self.click_bias = _solve_bias(click_rate, lambda b: _sigmoid(zc + b).mean())
        pc = _sigmoid(zc + self.click_bias)
        self.cvr_bias = _solve_bias(conversion_rate, lambda b: (pc * _sigmoid(zv + b)).mean())

    # ------------------------------------------------------------------ impressions
    def _categories(self, rng, users: np.ndarray) -> np.ndarray:
        """One category per entry of ``users``, drawn from each user's pi_u."""
        return _alias_draw(rng, self.user_category_prob, self.user_category_alias, users)

    def _popular_in(self, rng, categories: np.ndarray) -> np.ndarray:
        """One item per entry of ``categories``, by popularity inside that category."""
        j = _alias_draw(rng, self.category_item_prob, self.category_item_alias, categories)
        return self.category_items[categories, j]

    def _draw(self, rng: np.random.Generator, n: int = BLOCK_ROWS) -> dict:
        """Who saw what, where and when: indices, history and context of ``n`` impressions.

        The history of row ``r`` is ``hist[offsets[r]:offsets[r + 1]]`` (item indices, most
        recent last); ``row`` and ``age`` give each history position's row and age (0: the most
        recent); ``intent`` is the latent session category; ``tag_weights`` (n, TAGS_PER_ITEM_MAX)
        the relevance weights of the target's tags ``item_tag_ids[item]`` (0 for padding).
        """
        user = rng.choice(len(self.user_weight), n, p=self.user_weight)
        intent = self._categories(rng, user)
        # History lengths, then per position: its row, age, category and item.
        rate = rng.gamma(_HISTORY_SHAPE, _HISTORY_MEAN * np.exp(0.5 * self.user_activity_z[user]) / _HISTORY_SHAPE)
        length = np.where(rng.random(n) < _HISTORY_EMPTY, 0, np.minimum(rng.poisson(rate), HISTORY_MAX))
        offsets = np.concatenate([[0], np.cumsum(length)])
        total = int(offsets[-1])
        row = np.repeat(np.arange(n), length)
        age = offsets[row + 1] - 1 - np.arange(total)
        in_intent = rng.random(total) < _INTENT_BY_AGE[age]
        category = np.where(in_intent, intent[row], self._categories(rng, user[row]))
        hist = self._popular_in(rng, category)
        # Re-visits: position p repeats the (resolved) item gap positions older in its row.
        source = np.arange(total)
        revisit = (rng.random(total) < _REVISIT) & (source > offsets[row])
        source[revisit] = np.maximum(source[revisit] - rng.geometric(_REVISIT_GAP, int(revisit.sum())), offsets[row][revisit])
        while True:  # pointer jumping until every re-visit points at an original visit
            resolved = source[source]
            if np.array_equal(resolved, source):
                break
            source = resolved
        hist = hist[source]
        # The target item.
        item = rng.choice(len(self.item_weight), n, p=self.item_weight)
        choice = rng.random(n)
        from_intent = self._popular_in(rng, intent)
        back = np.minimum(rng.geometric(_TARGET_REPEAT_AGE, n) - 1, np.maximum(length - 1, 0))
        repeat = (choice < _TARGET_REPEAT) & (length > 0)
        item = np.where((choice >= _TARGET_REPEAT) & (choice < _TARGET_REPEAT + _TARGET_INTENT), from_intent, item)
        item[repeat] = hist[offsets[1:][repeat] - 1 - back[repeat]]
        # The target's tags' relevance to this impression (0 for padding).
        base = self.item_tag_base[item]
        tag_weights = np.where(base > 0, _relevance(base, rng.normal(0.0, 1.0, base.shape)), 0.0)
        favourite = rng.random(n) < 0.6
        device = np.where(favourite, self.user_device[user], rng.integers(0, len(DEVICES), n))
        habitual = rng.random(n) < 0.6
        hour = np.where(habitual, np.round(self.user_peak[user] + rng.normal(0.0, 3.0, n)),
                        rng.integers(0, 24, n)).astype(np.int64) % 24
        log_price = self.item_log_price[item] + rng.normal(0.0, 0.1, n)
        rel_price = log_price - self.category_log_price[self.item_category[item]]
        return {"user": user, "item": item, "device": device, "hour": hour, "log_price": log_price,
                "rel_price": rel_price, "intent": intent, "hist": hist, "offsets": offsets, "row": row, "age": age,
                "tag_weights": tag_weights}

    def _context(self, x: dict) -> np.ndarray:
        """The observed context the affinities' random features read, (n, _CONTEXT_DIMS)."""
        angle = 2 * math.pi * x["hour"] / 24.0
        u = x["user"]
        return np.column_stack([
            np.cos(angle), np.sin(angle), np.eye(len(DEVICES))[x["device"]],
            self.user_activity_z[u],
        ])

    def history_sums(self, x: dict) -> tuple[np.ndarray, np.ndarray]:
        """(S_rep, S_cat) per impression: recency-weighted exact / same-category matches."""
        hist, item, row = x["hist"], x["item"], x["row"]
        n = len(item)
        recency = _RECENCY_WEIGHTS[x["age"]]
        target = item[row]
        same_item = np.bincount(row, recency * (hist == target), minlength=n)
        same_category = np.bincount(row, recency * (self.item_category[hist] == self.item_category[target]), minlength=n)
        return same_item, same_category

    def history_raw(self, x: dict, parts=("repeat", "category")) -> np.ndarray:
        """H_raw: the sharp history x target kernel (module docstring), or only some of its parts."""
        same_item, same_category = self.history_sums(x)
        out = np.zeros(len(same_item))
        if "repeat" in parts:
            out += _REPEAT_WEIGHT * np.tanh(same_item)
        if "category" in parts:
            out += _CATEGORY_WEIGHT * np.tanh(same_category / _CATEGORY_SCALE)
        return out

    def tags_raw(self, x: dict, expected: bool = False) -> np.ndarray:
        """T_raw = sum_k w_ik (g[t_ik] + pref[u, t_ik]); ``expected``: with E[w_ik] instead of
        this impression's weights (what the (user, item) pair alone tells)."""
        i = x["item"]
        ids = self.item_tag_ids[i]
        weights = _expected_relevance(self.item_tag_base[i]) if expected else x["tag_weights"]
        return (weights * (self.tag_appeal[ids] + self.user_tag_pref[x["user"][:, None], ids])).sum(axis=1)

    def click_affinity_terms(self, x: dict, context: np.ndarray | None = None, terms=TERMS) -> np.ndarray:
        """aff1 (module docstring) with only the optional ``terms`` (of ``TERMS``, or "history")."""
        context_aff, id_aff = self.click_affinity(self._context(x) if context is None else context, x["user"], x["item"])
        out = context_aff + _ID_SHARE * id_aff
        parts = [t for t in ("repeat", "category") if t in terms or "history" in terms]
        if parts:  # a dropped part is 0 instead of its value: only a shift for the AUC of the rest
            out = out + _HISTORY_WEIGHT * (self.history_raw(x, parts) - self.history_mean) / self.history_std
        if "tags" in terms or "expected_tags" in terms:
            out = out + _TAG_WEIGHT * (self.tags_raw(x, "tags" not in terms) - self.tag_mean) / self.tag_std
        return out

    def logits(self, x: dict, terms=TERMS) -> tuple[np.ndarray, np.ndarray]:
        """(logit(p_click), logit(p_cvr | click)) of a draw; ``terms`` a subset of ``TERMS`` (or
        "history") drops the other optional terms from aff1 (to measure what they are worth;
        biases and standardizations unchanged)."""
        u, i = x["user"], x["item"]
        rho = self.task_correlation
        context = self._context(x)
        aff1 = self.click_affinity_terms(x, context, terms)
        c2, i2 = self.cvr_affinity(context, u, i)
        aff2 = c2 + _ID_SHARE * i2
        click = (
            self.click_bias
            + self.interaction_scale * aff1
            + self.user_bias[u]
            + self.item_bias[i]
            + self.device_hour[x["device"], x["hour"]]
            + 0.3 * (x["device"] == self.user_device[u])
            - 0.5 * np.exp(-0.3 * self.user_activity_z[u]) * x["rel_price"] / 0.4
        )
        cvr = (
            self.cvr_bias
            + self.interaction_scale * (rho * aff1 + math.sqrt(max(0.0, 1.0 - rho * rho)) * aff2)
            + 0.5 * self.item_quality[i]
            - 0.8 * x["rel_price"] / 0.4
            + 0.3 * np.tanh(self.user_tenure_z[u])
            + 0.5 * self.user_bias[u]
        )
        return click, cvr

    def probabilities(self, x: dict, terms=TERMS) -> tuple[np.ndarray, np.ndarray]:
        """(p_click, p_conversion) of a draw (the oracle columns with ``terms=TERMS``)."""
        zc, zv = self.logits(x, terms)
        p_click = _sigmoid(zc)
        return p_click, p_click * _sigmoid(zv)

    def draw_block(self, block: int) -> tuple[dict, np.random.Generator]:
        """The latent draw of block ``block`` and its random stream (positioned for the labels)."""
        rng = np.random.default_rng([self.seed, _BLOCK, block])
        return self._draw(rng), rng

    def impressions(self, block: int) -> dict:
        """The ``BLOCK_ROWS`` impressions of block ``block`` as columns (see ``COLUMNS``)."""
        x, rng = self.draw_block(block)
        zc, zv = self.logits(x)
        p_click, p_cvr = _sigmoid(zc), _sigmoid(zv)
        click = (rng.random(BLOCK_ROWS) < p_click).astype(np.int64)
        conversion = click * (rng.random(BLOCK_ROWS) < p_cvr).astype(np.int64)
        u, i = x["user"], x["item"]
        first = block * BLOCK_ROWS
        return {
            "impression_id": np.char.add("imp", np.arange(first, first + BLOCK_ROWS).astype(str)),
            "user_id": np.char.add("u", u.astype(str)),
            "item_id": np.char.add("i", i.astype(str)),
            "item_category": np.char.add("c", self.item_category[i].astype(str)),
            "device": DEVICES[x["device"]],
            "hour": x["hour"],
            "price": np.maximum(np.round(np.exp(x["log_price"]), 2), 0.01),
            "user_activity": self.user_activity[u],
            "user_tenure_days": self.user_tenure[u],
            "item_popularity": self.item_popularity[i],
            "item_rating": self.item_rating[i],
            "hist_items": self._history_field(x["hist"], x["offsets"]),
            "item_tags": self._tags_field(i, x["tag_weights"]),
            "click": click,
            "conversion": conversion,
            "p_click": p_click,
            "p_conversion": p_click * p_cvr,
        }

    def _history_field(self, hist: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Each row's history as its CSV field (ids joined by LIST_SEPARATOR): one join of the
        whole block, then one slice per row (no per-value Python work besides the join)."""
        text = "".join(self.item_names[hist].tolist())
        ends = np.concatenate([[0], np.cumsum(self.item_name_length[hist])])
        start, stop = ends[offsets[:-1]], ends[offsets[1:]]
        stop = np.where(stop > start, stop - 1, start)  # drop the trailing separator
        return np.array([text[a:b] for a, b in zip(start.tolist(), stop.tolist())], dtype=object)

    def _tags_field(self, item: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Each row's tags as its CSV field: "t<k>:<w>" tokens in the item's order, "|"-joined
        (one lookup per token in the table of every (tag, weight) token; one concatenation per slot)."""
        ids, count = self.item_tag_ids[item], self.item_tag_count[item]
        token = ids * len(_WEIGHT_TEXT) + np.round(weights * 100).astype(np.int64)
        field = self.tag_tokens[token[:, 0]]
        for k in range(1, ids.shape[1]):
            more = count > k
            field[more] = field[more] + self.tag_tokens_after[token[more, k]]
        return field
