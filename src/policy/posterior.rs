//! Conjugate posteriors kept as decayed sufficient statistics.
//!
//! Each posterior stores its prior and the evidence seen since, never the posterior parameters
//! themselves: decay multiplies the evidence by `gamma` in (0, 1], so old observations fade toward the
//! prior, and `gamma = 1` leaves every statistic bit-for-bit unchanged (multiplication by 1.0 is exact).

use rand::Rng;
use rand_distr::{Distribution, Gamma, StandardNormal};
use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

/// Beta(alpha0 + s, beta0 + f) over a probability.
///
/// Updates are fractional: an observation `x` in [0, 1] adds `x` to `s` and `1 - x` to `f`, so a
/// quality score of 0.7 counts as 0.7 of a success (the "fractional Beta" update used by LiteLLM's
/// adaptive router and by Agrawal & Goyal's Bernoulli trick for Thompson sampling with [0, 1] rewards).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BetaPosterior {
    pub prior_alpha: f64,
    pub prior_beta: f64,
    /// Decayed sum of `x`.
    pub s: f64,
    /// Decayed sum of `1 - x`.
    pub f: f64,
}

impl BetaPosterior {
    /// A prior with mean `mean` worth `strength` pseudo-observations.
    pub fn with_prior(mean: f64, strength: f64) -> Self {
        let mean = mean.clamp(1e-6, 1.0 - 1e-6);
        Self {
            prior_alpha: mean * strength,
            prior_beta: (1.0 - mean) * strength,
            s: 0.0,
            f: 0.0,
        }
    }

    pub fn alpha(&self) -> f64 {
        self.prior_alpha + self.s
    }

    pub fn beta(&self) -> f64 {
        self.prior_beta + self.f
    }

    /// Evidence seen, after decay (the effective number of observations).
    pub fn evidence(&self) -> f64 {
        self.s + self.f
    }

    /// Adds one observation `x` in [0, 1]; the caller validates `x`.
    pub fn observe(&mut self, x: f64) {
        self.s += x;
        self.f += 1.0 - x;
    }

    /// Multiplies the evidence by `gamma` (exact no-op for `gamma == 1`).
    pub fn decay(&mut self, gamma: f64) {
        self.s *= gamma;
        self.f *= gamma;
    }

    /// Posterior mean alpha / (alpha + beta).
    pub fn mean(&self) -> f64 {
        self.alpha() / (self.alpha() + self.beta())
    }

    /// Posterior variance alpha*beta / ((alpha+beta)^2 (alpha+beta+1)).
    pub fn variance(&self) -> f64 {
        let (a, b) = (self.alpha(), self.beta());
        let n = a + b;
        a * b / (n * n * (n + 1.0))
    }

    /// One draw from the posterior, as X / (X + Y) with X ~ Gamma(alpha), Y ~ Gamma(beta).
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> f64 {
        let x = sample_gamma(rng, self.alpha(), 1.0);
        let y = sample_gamma(rng, self.beta(), 1.0);
        let total = x + y;
        if total > 0.0 {
            x / total
        } else {
            self.mean()
        }
    }
}

/// Normal-Gamma posterior over the mean `mu` and precision `tau` of a Normal, here used for
/// ln(latency_ms) and ln(cost_usd), so the quantities themselves are log-normal.
///
/// Conjugate update after Murphy, "Conjugate Bayesian analysis of the Gaussian distribution" (2007),
/// eqs. 86-89, with the data summarised by a weighted count `n`, mean and sum of squared deviations
/// (weighted Welford), which decay by scaling `n` and `m2` while the mean stays put.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NormalGamma {
    pub prior_mu: f64,
    pub prior_kappa: f64,
    pub prior_alpha: f64,
    pub prior_beta: f64,
    /// Decayed count of observations.
    pub n: f64,
    /// Mean of the observations (meaningless while `n == 0`).
    pub mean: f64,
    /// Decayed sum of squared deviations from `mean`.
    pub m2: f64,
}

/// Posterior parameters (mu_n, kappa_n, alpha_n, beta_n).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NormalGammaParams {
    pub mu: f64,
    pub kappa: f64,
    pub alpha: f64,
    pub beta: f64,
}

/// The standard normal's 0.95 quantile, for p95 estimates.
pub const Z95: f64 = 1.644_853_626_951_472_2;

impl NormalGamma {
    /// A prior centred on `mu` (log scale) with typical spread `sigma` (log scale), worth `strength`
    /// pseudo-observations: kappa0 = strength, alpha0 = 1 + strength/2 (so E[sigma^2] is finite), and
    /// beta0 = sigma^2 (alpha0 - 1), which makes the prior mean of the variance exactly `sigma^2`.
    pub fn with_prior(mu: f64, sigma: f64, strength: f64) -> Self {
        let alpha = 1.0 + strength / 2.0;
        Self {
            prior_mu: mu,
            prior_kappa: strength,
            prior_alpha: alpha,
            prior_beta: sigma * sigma * (alpha - 1.0),
            n: 0.0,
            mean: 0.0,
            m2: 0.0,
        }
    }

    /// Adds one observation `x` (already on the log scale, finite; the caller validates).
    pub fn observe(&mut self, x: f64) {
        let n = self.n + 1.0;
        let delta = x - self.mean;
        self.mean += delta / n;
        self.m2 += delta * (x - self.mean);
        self.n = n;
    }

    /// Multiplies the evidence by `gamma` (exact no-op for `gamma == 1`).
    pub fn decay(&mut self, gamma: f64) {
        self.n *= gamma;
        self.m2 *= gamma;
    }

    /// The posterior parameters (Murphy 2007, eqs. 86-89).
    pub fn params(&self) -> NormalGammaParams {
        let (k0, m0, a0, b0) = (
            self.prior_kappa,
            self.prior_mu,
            self.prior_alpha,
            self.prior_beta,
        );
        let n = self.n;
        if n <= 0.0 {
            return NormalGammaParams {
                mu: m0,
                kappa: k0,
                alpha: a0,
                beta: b0,
            };
        }
        let kappa = k0 + n;
        let d = self.mean - m0;
        NormalGammaParams {
            mu: (k0 * m0 + n * self.mean) / kappa,
            kappa,
            alpha: a0 + n / 2.0,
            beta: b0 + 0.5 * self.m2.max(0.0) + k0 * n * d * d / (2.0 * kappa),
        }
    }

    /// Posterior mean of mu (the log-scale location).
    pub fn mean_mu(&self) -> f64 {
        self.params().mu
    }

    /// Plug-in variance of one observation: beta_n / alpha_n, the inverse of E[tau].
    pub fn plug_in_variance(&self) -> f64 {
        let p = self.params();
        p.beta / p.alpha
    }

    /// Plug-in mean of the log-normal quantity: exp(mu_n + sigma^2 / 2) with sigma^2 = beta_n/alpha_n.
    pub fn mean_exp(&self) -> f64 {
        (self.mean_mu() + 0.5 * self.plug_in_variance()).exp()
    }

    /// Quantile `p` of the posterior predictive of one new observation, on the original scale:
    /// exp of the Student-t quantile with 2 alpha_n degrees of freedom, location mu_n and scale
    /// sqrt(beta_n (kappa_n + 1) / (alpha_n kappa_n)) (Murphy 2007, eq. 100).
    pub fn predictive_quantile_exp(&self, p: f64) -> f64 {
        let q = self.params();
        let scale = (q.beta * (q.kappa + 1.0) / (q.alpha * q.kappa)).sqrt();
        match StudentsT::new(q.mu, scale, 2.0 * q.alpha) {
            Ok(t) => t.inverse_cdf(p).exp(),
            Err(_) => q.mu.exp(),
        }
    }

    /// The 0.95 quantile of the posterior predictive, on the original scale, via the Cornish-Fisher
    /// expansion of the Student-t quantile ([`student_t_quantile`]): the hot path's p95.
    pub fn predictive_p95_exp(&self) -> f64 {
        let q = self.params();
        let scale = (q.beta * (q.kappa + 1.0) / (q.alpha * q.kappa)).sqrt();
        (q.mu + scale * student_t_quantile(Z95, 2.0 * q.alpha)).exp()
    }

    /// Standard deviation of the marginal posterior of mu: sqrt(beta_n / (alpha_n kappa_n)) times
    /// the Student-t factor sqrt(nu / (nu - 2)) for nu = 2 alpha_n > 2 (Murphy 2007, eq. 92).
    pub fn mu_sd(&self) -> f64 {
        let q = self.params();
        let nu = 2.0 * q.alpha;
        let factor = if nu > 2.0 { nu / (nu - 2.0) } else { 3.0 };
        (q.beta / (q.alpha * q.kappa) * factor).sqrt()
    }

    /// One draw of (mu, sigma) from the posterior: tau ~ Gamma(alpha_n, rate beta_n),
    /// mu ~ N(mu_n, 1 / (kappa_n tau)).
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> (f64, f64) {
        let q = self.params();
        let tau = sample_gamma(rng, q.alpha, 1.0 / q.beta).max(1e-12);
        let z: f64 = StandardNormal.sample(rng);
        let mu = q.mu + z / (q.kappa * tau).sqrt();
        (mu, (1.0 / tau).sqrt())
    }
}

/// The Student-t quantile with `nu` degrees of freedom at the standard normal quantile `z`, by the
/// Cornish-Fisher expansion (Abramowitz & Stegun 26.7.5) to the third term: within 0.2% of the exact
/// quantile for nu >= 4 at z = 1.645; below nu = 4 it defers to statrs' exact inverse CDF.
pub fn student_t_quantile(z: f64, nu: f64) -> f64 {
    if nu < 4.0 {
        let p = statrs::function::erf::erfc(-z / std::f64::consts::SQRT_2) / 2.0;
        return StudentsT::new(0.0, 1.0, nu.max(1e-3))
            .map(|t| t.inverse_cdf(p))
            .unwrap_or(z);
    }
    let z2 = z * z;
    let z3 = z2 * z;
    let z5 = z3 * z2;
    let z7 = z5 * z2;
    z + (z3 + z) / (4.0 * nu)
        + (5.0 * z5 + 16.0 * z3 + 3.0 * z) / (96.0 * nu * nu)
        + (3.0 * z7 + 19.0 * z5 + 17.0 * z3 - 15.0 * z) / (384.0 * nu * nu * nu)
}

/// A Gamma(shape, scale) distribution prepared once and drawn from many times; a degenerate one
/// (non-finite or non-positive parameters) always yields its mean.
#[derive(Debug, Clone, Copy)]
pub enum GammaSampler {
    Dist(Gamma<f64>),
    Const(f64),
}

impl GammaSampler {
    pub fn new(shape: f64, scale: f64) -> Self {
        match Gamma::new(shape, scale) {
            Ok(g) => GammaSampler::Dist(g),
            Err(_) => GammaSampler::Const(shape * scale),
        }
    }

    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> f64 {
        match self {
            GammaSampler::Dist(g) => g.sample(rng),
            GammaSampler::Const(v) => *v,
        }
    }
}

/// Gamma(shape, scale) draw; falls back to the mean if the parameters are degenerate.
fn sample_gamma<R: Rng + ?Sized>(rng: &mut R, shape: f64, scale: f64) -> f64 {
    match Gamma::new(shape, scale) {
        Ok(g) => g.sample(rng),
        Err(_) => shape * scale,
    }
}

/// The decay factor for `elapsed_secs` under a half-life: 0.5^(elapsed / half_life).
///
/// `None` (no half-life) and `elapsed_secs == 0` both give exactly 1.0.
pub fn decay_factor(elapsed_secs: f64, half_life_secs: Option<f64>) -> f64 {
    match half_life_secs {
        Some(h) if elapsed_secs > 0.0 && h > 0.0 => 0.5f64.powf(elapsed_secs / h),
        _ => 1.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;
    use statrs::distribution::Beta as StatrsBeta;
    use statrs::statistics::Distribution as _;

    const SEED: u64 = 0x5eed_0001;

    #[test]
    fn beta_update_matches_closed_form() {
        let mut b = BetaPosterior::with_prior(0.5, 2.0);
        for x in [1.0, 1.0, 0.0, 0.5, 0.25] {
            b.observe(x);
        }
        // alpha = 1 + 2.75, beta = 1 + 2.25
        assert_eq!(b.alpha(), 3.75);
        assert_eq!(b.beta(), 3.25);
        let reference = StatrsBeta::new(3.75, 3.25).unwrap();
        assert!((b.mean() - reference.mean().unwrap()).abs() < 1e-12);
        assert!((b.variance() - reference.variance().unwrap()).abs() < 1e-12);
    }

    #[test]
    fn beta_decay_halves_evidence_and_gamma_one_is_exact() {
        let mut b = BetaPosterior::with_prior(0.8, 4.0);
        for i in 0..37 {
            b.observe(f64::from(i % 3) / 2.0);
        }
        let before = b;
        b.decay(1.0);
        assert_eq!(b, before, "gamma = 1 must change nothing, bit for bit");
        b.decay(0.5);
        assert_eq!(b.s, before.s * 0.5);
        assert_eq!(b.f, before.f * 0.5);
        assert_eq!(b.prior_alpha, before.prior_alpha);
    }

    #[test]
    fn beta_sampling_matches_mean_and_variance() {
        let b = BetaPosterior {
            prior_alpha: 3.0,
            prior_beta: 7.0,
            s: 0.0,
            f: 0.0,
        };
        let mut rng = SmallRng::seed_from_u64(SEED);
        let n = 200_000;
        let draws: Vec<f64> = (0..n).map(|_| b.sample(&mut rng)).collect();
        let mean = draws.iter().sum::<f64>() / n as f64;
        let var = draws.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        // mean 0.3, variance 21 / (100 * 11) = 0.019090...
        assert!((mean - 0.3).abs() < 0.002, "mean {mean}");
        assert!((var - 21.0 / 1100.0).abs() < 0.0005, "variance {var}");
    }

    #[test]
    fn normal_gamma_update_matches_batch_formula() {
        let mut ng = NormalGamma::with_prior(1.0, 0.5, 2.0);
        let xs = [0.2, 1.7, 2.4, 0.9, 1.1, 3.0];
        for x in xs {
            ng.observe(x);
        }
        let n = xs.len() as f64;
        let xbar = xs.iter().sum::<f64>() / n;
        let ss: f64 = xs.iter().map(|x| (x - xbar).powi(2)).sum();
        let (k0, m0, a0, b0) = (2.0, 1.0, 2.0, 0.25);
        let p = ng.params();
        assert!((p.kappa - (k0 + n)).abs() < 1e-12);
        assert!((p.mu - (k0 * m0 + n * xbar) / (k0 + n)).abs() < 1e-12);
        assert!((p.alpha - (a0 + n / 2.0)).abs() < 1e-12);
        let beta = b0 + 0.5 * ss + k0 * n * (xbar - m0).powi(2) / (2.0 * (k0 + n));
        assert!((p.beta - beta).abs() < 1e-12, "{} vs {}", p.beta, beta);
    }

    #[test]
    fn normal_gamma_prior_reproduces_its_inputs() {
        let ng = NormalGamma::with_prior(800f64.ln(), 0.4, 2.0);
        let p = ng.params();
        assert_eq!(p.mu, 800f64.ln());
        // E[sigma^2] = beta / (alpha - 1) = sigma^2
        assert!((p.beta / (p.alpha - 1.0) - 0.16).abs() < 1e-12);
    }

    #[test]
    fn normal_gamma_decay_equals_weighted_batch() {
        // Decaying by g after the first two observations equals weights (g, g, 1).
        let g = 0.25;
        let mut ng = NormalGamma::with_prior(0.0, 1.0, 1.0);
        ng.observe(2.0);
        ng.observe(4.0);
        ng.decay(g);
        ng.observe(1.0);
        let w = [g, g, 1.0];
        let x = [2.0, 4.0, 1.0];
        let n: f64 = w.iter().sum();
        let mean = w.iter().zip(x).map(|(w, x)| w * x).sum::<f64>() / n;
        let m2: f64 = w.iter().zip(x).map(|(w, x)| w * (x - mean).powi(2)).sum();
        assert!((ng.n - n).abs() < 1e-12);
        assert!((ng.mean - mean).abs() < 1e-12);
        assert!((ng.m2 - m2).abs() < 1e-12);
        let before = ng;
        ng.decay(1.0);
        assert_eq!(ng, before);
    }

    #[test]
    fn predictive_quantiles_match_student_t() {
        let mut ng = NormalGamma::with_prior(6.0, 0.5, 2.0);
        for x in [6.2, 5.9, 6.5, 6.1] {
            ng.observe(x);
        }
        let p = ng.params();
        let scale = (p.beta * (p.kappa + 1.0) / (p.alpha * p.kappa)).sqrt();
        let t = StudentsT::new(p.mu, scale, 2.0 * p.alpha).unwrap();
        assert!((ng.predictive_quantile_exp(0.5) - p.mu.exp()).abs() < 1e-6);
        let q95 = t.inverse_cdf(0.95).exp();
        assert!((ng.predictive_quantile_exp(0.95) - q95).abs() < 1e-6);
        assert!(ng.predictive_quantile_exp(0.95) > ng.predictive_quantile_exp(0.5));
    }

    #[test]
    fn normal_gamma_sampling_matches_posterior_moments() {
        let mut ng = NormalGamma::with_prior(2.0, 0.5, 2.0);
        for x in [2.2, 1.8, 2.5, 2.1, 1.9, 2.3] {
            ng.observe(x);
        }
        let p = ng.params();
        let mut rng = SmallRng::seed_from_u64(SEED);
        let n = 200_000;
        let mut sum_mu = 0.0;
        let mut sum_tau = 0.0;
        for _ in 0..n {
            let (mu, sigma) = ng.sample(&mut rng);
            sum_mu += mu;
            sum_tau += 1.0 / (sigma * sigma);
        }
        // E[mu] = mu_n, E[tau] = alpha_n / beta_n
        assert!((sum_mu / n as f64 - p.mu).abs() < 0.002);
        let e_tau = p.alpha / p.beta;
        assert!(((sum_tau / n as f64) - e_tau).abs() / e_tau < 0.01);
    }

    #[test]
    fn cornish_fisher_t_quantile_matches_statrs() {
        for nu in [4.0, 5.0, 8.0, 20.0, 100.0, 1000.0] {
            let exact = StudentsT::new(0.0, 1.0, nu).unwrap().inverse_cdf(0.95);
            let approx = student_t_quantile(Z95, nu);
            assert!((approx - exact).abs() / exact < 0.002, "nu {nu}: {approx} vs {exact}");
        }
        // Below nu = 4 the exact quantile is used.
        let exact = StudentsT::new(0.0, 1.0, 3.0).unwrap().inverse_cdf(0.95);
        assert!((student_t_quantile(Z95, 3.0) - exact).abs() < 1e-6);
        assert_eq!(student_t_quantile(0.0, 10.0), 0.0);
    }

    #[test]
    fn fast_p95_matches_exact_predictive_quantile() {
        let mut ng = NormalGamma::with_prior(6.0, 0.5, 2.0);
        for x in [6.2, 5.9, 6.5] {
            ng.observe(x);
        }
        let exact = ng.predictive_quantile_exp(0.95);
        assert!((ng.predictive_p95_exp() - exact).abs() / exact < 0.002);
    }

    #[test]
    fn decay_factor_half_life() {
        assert_eq!(decay_factor(10.0, None), 1.0);
        assert_eq!(decay_factor(0.0, Some(5.0)), 1.0);
        assert_eq!(decay_factor(10.0, Some(f64::INFINITY)), 1.0);
        assert!((decay_factor(5.0, Some(5.0)) - 0.5).abs() < 1e-15);
        assert!((decay_factor(15.0, Some(5.0)) - 0.125).abs() < 1e-15);
    }
}
