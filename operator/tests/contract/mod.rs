//! The contract between operator and proxy: the env and args the webhook
//! gives the proxy container must make a configuration the proxy's own
//! parser (`cloudtaser_s3proxy::cli::Cli`) accepts and resolves (`ProxyConfig::resolve`).

use clap::CommandFactory;
use clap::Parser;
use k8s_openapi::api::core::v1::Container;

/// Env the proxy does not parse itself but the AWS SDK's default chain
/// reads: static keys, and the IRSA / Pod Identity env the webhook copies
/// (`inject::ROLE_ENV`).
const AWS_SDK_ENV: &[&str] = &["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_EC2_METADATA_DISABLED"];

/// Parses the proxy container's env and args as the proxy would; Err says why not.
pub fn proxy_accepts(container: &Container) -> Result<(), String> {
    let command = cloudtaser_s3proxy::cli::Cli::command();
    // The settings are the top-level command's, so their flags come before
    // the subcommand in the args (as env, they apply wherever it is).
    let mut argv = vec!["cloudtaser-s3proxy".to_owned()];
    for var in container.env.iter().flatten() {
        // A secretKeyRef: the kubelet puts the Secret's value there.
        let value = match (&var.value, &var.value_from) {
            (Some(v), _) => v.clone(),
            (None, Some(_)) => "value-from-a-secret".to_owned(),
            (None, None) => String::new(),
        };
        let arg = command.get_arguments().find(|a| a.get_env().is_some_and(|e| e == var.name.as_str()));
        match arg.and_then(|a| a.get_long()) {
            Some(long) => argv.push(format!("--{long}={value}")),
            None if AWS_SDK_ENV.contains(&var.name.as_str())
                || cloudtaser_operator::webhook::inject::ROLE_ENV.contains(&var.name.as_str()) => {}
            None => return Err(format!("{} is not a setting of the proxy", var.name)),
        }
    }
    argv.extend(container.args.iter().flatten().cloned());
    let cli = cloudtaser_s3proxy::cli::Cli::try_parse_from(&argv).map_err(|e| format!("{argv:?}: {e}"))?;
    if !matches!(cli.command, None | Some(cloudtaser_s3proxy::cli::Command::Serve)) {
        return Err(format!("args {:?} do not run the proxy", container.args));
    }
    cli.proxy.resolve().map(drop).map_err(|e| format!("{argv:?}: {e}"))
}
