"""The synthetic world: user and item tables and the true click / conversion probabilities.

A ``World`` is drawn once from the seed (small tables: ``num_users`` users, ``num_items``
items); ``World.impressions(block)`` then draws a fixed-size block of impressions from its
own random stream, so a row's content depends only on (seed, row index), never on how the
rows are chunked into files.

The probabilities (``a`` = ``interaction_scale``, ``rho`` = ``task_correlation``, ``d`` =
``latent_dim``; ``act_u`` is the user's standardized log activity, ``rel`` the impression's
log price minus its category's, ``x`` the observed context [cos, sin of the hour, device
one-hot, act_u])::

    phi_k(x)  = cos(w_k . x + c_k), k = 1..d       random features, w_k ~ N(0, 0.4^2)
    V_i       = sqrt(1 - 0.2^2) C_category(i) + 0.2 E_i   item latent (mostly its category's)
    aff       = <phi(x), V_i> + 0.1 <U_u, V_i>     user x item affinity, each part scaled to std 1
    logit(p_click) = b_click + a * aff1 + b_u + b_i + DH[device, hour]
                     + 0.3 [device == favourite_device_u] - 0.5 exp(-0.3 act_u) rel / 0.4
    logit(p_cvr | click) = b_cvr + a * (rho * aff1 + sqrt(1 - rho^2) * aff2)
                     + 0.5 quality_i - 0.8 rel / 0.4 + 0.3 tanh(tenure_z_u) + 0.5 b_u
    p_conversion = p_click * p_cvr                 (per impression)

``aff1`` and ``aff2`` use independent frequencies, item and user latents. They are mixed
with weights ``rho`` and ``sqrt(1 - rho^2)`` (the MMoE paper's construction), so the mix
keeps its scale whatever the knob and correlates with ``aff1`` exactly by ``rho``. The
affinity is rank ``d`` in the item latent: a model whose item / category embeddings are
narrower than ``d`` (the 4-dim student) cannot represent it, a 16-dim one (the teacher)
can. ``b_click`` and ``b_cvr`` are solved by bisection on a calibration sample so the mean
click rate is ``click_rate`` and the mean conversion per impression ``conversion_rate``.
The numeric columns are views of the latent tables: ``user_activity`` reveals act_u (and
most of b_u = 0.4 act_u + noise), ``item_rating`` reveals quality_i, ``user_tenure_days``
the tenure, ``item_popularity`` the item's sampling weight. bench/synthetic_difficulty.py
measures how much of this a full-size and a small model learn.
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
    "click", "conversion", "p_click", "p_conversion",
]
_CALIBRATION_BLOCKS = 5
_WORLD, _BLOCK, _CALIBRATION = 0, 1, 2  # random stream ids
_CONTEXT_DIMS = 7  # hour (cos, sin), device one-hot (4), user activity
_NONLINEARITY = 0.4  # std of the random-feature frequencies: higher, wigglier affinities
_ITEM_SHARE = 0.2  # weight of the per-item part of an item latent (the rest: its category's)
_ID_SHARE = 0.1  # weight of the user-id latent affinity next to the context affinity


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
    item_bias: np.ndarray
    item_category: np.ndarray
    item_log_price: np.ndarray
    category_log_price: np.ndarray
    item_quality: np.ndarray
    item_rating: np.ndarray
    item_popularity: np.ndarray
    item_weight: np.ndarray
    device_hour: np.ndarray  # (devices, 24)
    click_bias: float = 0.0
    cvr_bias: float = 0.0

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
        world = cls(
            seed=s.seed,
            interaction_scale=s.interaction_scale,
            task_correlation=s.task_correlation,
            click_affinity=_Affinity.draw(rng, nu, item_category, nc, d),
            cvr_affinity=_Affinity.draw(rng, nu, item_category, nc, d),
            user_activity_z=activity_z,
            user_tenure_z=tenure_z,
            user_bias=0.4 * activity_z + rng.normal(0.0, 0.2, nu),
            user_device=rng.integers(0, len(DEVICES), nu),
            user_peak=rng.uniform(0.0, 24.0, nu),
            user_activity=np.round(5.0 * activity, 3),
            user_tenure=tenure,
            user_weight=activity / activity.sum(),
            item_bias=rng.normal(0.0, 0.2, ni),
            item_category=item_category,
            item_log_price=category_log_price[item_category] + rng.normal(0.0, 0.4, ni),
            category_log_price=category_log_price,
            item_quality=item_quality,
            item_rating=np.round(np.clip(3.5 + 0.7 * item_quality + rng.normal(0.0, 0.2, ni), 1.0, 5.0), 2),
            item_popularity=np.round(popularity * ni * np.exp(rng.normal(0.0, 0.2, ni)), 4),
            item_weight=popularity,
            device_hour=rng.normal(0.0, 0.3, (len(DEVICES), 24)),
        )
        world._calibrate(s.click_rate, s.conversion_rate)
        return world

    def _calibrate(self, click_rate: float, conversion_rate: float) -> None:
        draws = [self._draw(np.random.default_rng([self.seed, _CALIBRATION, b])) for b in range(_CALIBRATION_BLOCKS)]
        for aff in (self.click_affinity, self.cvr_affinity):
            parts = [aff.raw(self._context(x), x["user"], x["item"]) for x in draws]
            aff.context_std = float(np.concatenate([p[0] for p in parts]).std()) or 1.0
            aff.id_std = float(np.concatenate([p[1] for p in parts]).std()) or 1.0
        zc = np.concatenate([self._click_logit(x) for x in draws])
        zv = np.concatenate([self._cvr_logit(x) for x in draws])
        self.click_bias = _solve_bias(click_rate, lambda b: _sigmoid(zc + b).mean())
        pc = _sigmoid(zc + self.click_bias)
        self.cvr_bias = _solve_bias(conversion_rate, lambda b: (pc * _sigmoid(zv + b)).mean())

    # ------------------------------------------------------------------ impressions
    def _draw(self, rng: np.random.Generator, n: int = BLOCK_ROWS) -> dict:
        """Who saw what, where and when: indices and context of ``n`` impressions."""
        user = rng.choice(len(self.user_weight), n, p=self.user_weight)
        item = rng.choice(len(self.item_weight), n, p=self.item_weight)
        favourite = rng.random(n) < 0.6
        device = np.where(favourite, self.user_device[user], rng.integers(0, len(DEVICES), n))
        habitual = rng.random(n) < 0.6
        hour = np.where(habitual, np.round(self.user_peak[user] + rng.normal(0.0, 3.0, n)),
                        rng.integers(0, 24, n)).astype(np.int64) % 24
        log_price = self.item_log_price[item] + rng.normal(0.0, 0.1, n)
        rel_price = log_price - self.category_log_price[self.item_category[item]]
        return {"user": user, "item": item, "device": device, "hour": hour, "log_price": log_price, "rel_price": rel_price}

    def _context(self, x: dict) -> np.ndarray:
        """The observed context the affinities' random features read, (n, _CONTEXT_DIMS)."""
        angle = 2 * math.pi * x["hour"] / 24.0
        u = x["user"]
        return np.column_stack([
            np.cos(angle), np.sin(angle), np.eye(len(DEVICES))[x["device"]],
            self.user_activity_z[u],
        ])

    def _click_logit(self, x: dict) -> np.ndarray:
        u, i = x["user"], x["item"]
        context_aff, id_aff = self.click_affinity(self._context(x), u, i)
        return (
            self.click_bias
            + self.interaction_scale * (context_aff + _ID_SHARE * id_aff)
            + self.user_bias[u]
            + self.item_bias[i]
            + self.device_hour[x["device"], x["hour"]]
            + 0.3 * (x["device"] == self.user_device[u])
            - 0.5 * np.exp(-0.3 * self.user_activity_z[u]) * x["rel_price"] / 0.4
        )

    def _cvr_logit(self, x: dict) -> np.ndarray:
        u, i = x["user"], x["item"]
        rho = self.task_correlation
        context = self._context(x)
        c1, i1 = self.click_affinity(context, u, i)
        c2, i2 = self.cvr_affinity(context, u, i)
        mixed = rho * (c1 + _ID_SHARE * i1) + math.sqrt(max(0.0, 1.0 - rho * rho)) * (c2 + _ID_SHARE * i2)
        return (
            self.cvr_bias
            + self.interaction_scale * mixed
            + 0.5 * self.item_quality[i]
            - 0.8 * x["rel_price"] / 0.4
            + 0.3 * np.tanh(self.user_tenure_z[u])
            + 0.5 * self.user_bias[u]
        )

    def impressions(self, block: int) -> dict:
        """The ``BLOCK_ROWS`` impressions of block ``block`` as columns (see ``COLUMNS``)."""
        rng = np.random.default_rng([self.seed, _BLOCK, block])
        x = self._draw(rng)
        p_click = _sigmoid(self._click_logit(x))
        p_cvr = _sigmoid(self._cvr_logit(x))
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
            "click": click,
            "conversion": conversion,
            "p_click": p_click,
            "p_conversion": p_click * p_cvr,
        }
