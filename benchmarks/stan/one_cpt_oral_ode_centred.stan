// one_cpt_oral_ode.stan with the between-subject effects sampled centred, as in
// one_cpt_oral_closed_centred.stan: parameters log CL_i, log V_i; eta_CL, eta_V generated.
functions {
  vector one_cpt_oral(real t, vector y, real ka, real k) {
    vector[2] dydt;
    dydt[1] = -ka * y[1];
    dydt[2] = ka * y[1] - k * y[2];
    return dydt;
  }
}
data {
  int<lower=1> N;
  int<lower=1> n_obs;
  array[N] int<lower=1> start;
  array[N] int<lower=1> end;
  array[N] real<lower=0> dose;
  array[n_obs] real<lower=0> time;        // strictly increasing within a subject, all > 0
  vector<lower=0>[n_obs] dv;
  vector[3] prior_loc;
  vector<lower=0>[3] prior_scale;
  vector<lower=0>[2] omega_scale;
  real<lower=0> sigma_scale;
  real<lower=0> rtol;
  real<lower=0> atol;
  int<lower=1> max_num_steps;
  int<lower=0, upper=1> use_bdf;
}
parameters {
  real<lower=0> CL;
  real<lower=0> V;
  real<lower=0> KA;
  real<lower=0> omega_CL;
  real<lower=0> omega_V;
  real<lower=0> sigma_prop_cp;
  vector[N] log_CL_i;
  vector[N] log_V_i;
}
model {
  vector[n_obs] pred;
  for (i in 1:N) {
    real cl = exp(log_CL_i[i]);
    real v = exp(log_V_i[i]);
    int n = end[i] - start[i] + 1;
    vector[2] y0 = [dose[i], 0]';
    array[n] vector[2] y;
    if (use_bdf) {
      y = ode_bdf_tol(one_cpt_oral, y0, 0.0, time[start[i]:end[i]], rtol, atol, max_num_steps,
                      KA, cl / v);
    } else {
      y = ode_rk45_tol(one_cpt_oral, y0, 0.0, time[start[i]:end[i]], rtol, atol, max_num_steps,
                       KA, cl / v);
    }
    for (j in 1:n) {
      pred[start[i] + j - 1] = y[j][2] / v;
    }
  }
  CL ~ lognormal(prior_loc[1], prior_scale[1]);
  V ~ lognormal(prior_loc[2], prior_scale[2]);
  KA ~ lognormal(prior_loc[3], prior_scale[3]);
  omega_CL ~ normal(0, omega_scale[1]);
  omega_V ~ normal(0, omega_scale[2]);
  sigma_prop_cp ~ normal(0, sigma_scale);
  log_CL_i ~ normal(log(CL), omega_CL);
  log_V_i ~ normal(log(V), omega_V);
  dv ~ normal(pred, sigma_prop_cp * abs(pred));
}
generated quantities {
  vector[N] eta_CL = (log_CL_i - log(CL)) / omega_CL;
  vector[N] eta_V = (log_V_i - log(V)) / omega_V;
}
