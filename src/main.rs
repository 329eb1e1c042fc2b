//! `mailhop`: thin entry point; everything lives in the library.

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp_millis()
        .init();
    std::process::exit(mailhop::cli::run(std::env::args_os()));
}
