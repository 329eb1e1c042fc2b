//! `mailhop`: thin entry point; everything lives in the library.

fn main() {
    let daemon = std::env::args_os().nth(1).is_some_and(|a| a == "daemon");
    mailhop::logging::init(daemon);
    std::process::exit(mailhop::cli::run(std::env::args_os()));
}
