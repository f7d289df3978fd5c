// One-compartment model with first-order absorption (closed-form solution), log-normal
// between-subject variability on CL and V (non-centred: P_i = P * exp(omega * eta_i),
// eta_i ~ N(0, 1)), proportional residual error. The same population model, parameter names and
// priors as ldpk's side of benchmarks/inference_vs_stan.py. Times in h, amounts in mg, mg/L.
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
  vector[N] eta_CL;
  vector[N] eta_V;
}
model {
  vector[n_obs] pred;
  for (i in 1:N) {
    real cl = CL * exp(omega_CL * eta_CL[i]);
    real v = V * exp(omega_V * eta_V[i]);
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
  eta_CL ~ std_normal();
  eta_V ~ std_normal();
  dv ~ normal(pred, sigma_prop_cp * abs(pred));
}
