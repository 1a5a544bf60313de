"""NTDH protocol G against the training-set size n (50 … 10,000): bounds become non-vacuous.

  xdistill run --config=configs/ntdh_samples.py --workdir=runs/ntdh_samples

8 sample sizes × overlaps {0, 10} × 10 seeds = 160 settings, each trained on fixed-size
10,000-row arrays with 0/1 example weights (one compiled program for every n). Writes the
usual tables plus ntdh_samples_o0.png and ntdh_samples_o10.png (error, Bayes floor, VC and
margin bounds against n on log-log axes, with the N5 reference slopes). About 2–3 minutes on
a 2-core CPU. Smaller: --config.sample_sizes='(50,500,5000)' --config.runs=4.
"""

from xdistill_jax import config_files


def get_config():
  config = config_files.sibling(__file__, 'ntdh_overlap').get_config()  # protocol G
  config.experiment = 'ntdh_samples'
  del config['n_train']  # the sample size is the axis `sample_sizes`
  config.sample_sizes = (50, 100, 200, 500, 1000, 2000, 5000, 10000)  # n (nested per seed)
  config.overlaps = (0, 10)
  config.runs = 10
  return config
