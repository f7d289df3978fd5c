// one_cpt_oral_closed.stan with the between-subject effects sampled centred: the parameters are
// log CL_i ~ N(log CL, omega_CL) and log V_i ~ N(log V, omega_V), and eta_CL, eta_V (the
// standardised effects of the non-centred program, (log P_i - log P) / omega) are generated
// quantities. The same posterior as the non-centred program, in other coordinates (ldpk's
// parameterization='centred'). Times in h, amounts in mg, mg/L.
data {
  int<lower=1> N;                         // subjects
  int<lower=1> n_obs;                     // observations, all subjects, subject by subject
  array[N] int<lower=1> start;            // first observation of each subject (1-based)
  array[N] int<lower=1> end;              // last observation of each subject
  array[N] real<lower=0> dose;            // oral bolus at t = 0 (mg)
  array[n_obs] real<lower=0> time;        // h
  vector<lower=0>[n_obs] dv;              // plasma concentration (mg/L)
  vector[3] prior_loc;                    // log-normal priors of CL, V, KA: location ...
  vector<lower=0>[3] prior_scale;         // ... and scale (of the log)
  vector<lower=0>[2] omega_scale;         // half-normal priors of omega_CL, omega_V
  real<lower=0> sigma_scale;              // half-normal prior of the proportional error SD
}
parameters {
  real<lower=0> CL;                       // L/h
  real<lower=0> V;                        // L
  real<lower=0> KA;                       // 1/h
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
    real k = cl / v;
    real c0 = dose[i] * KA / (v * (KA - k));
    for (j in start[i]:end[i]) {
      pred[j] = c0 * (exp(-k * time[j]) - exp(-KA * time[j]));
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
