/// Double-entry ledger used by ServiceB.
pub struct Ledger {
    entries: Vec<(String, i64)>,
}

impl Ledger {
    pub fn post(&mut self, account: &str, cents: i64) {
        self.entries.push((account.to_owned(), cents));
    }

    pub fn balance(&self) -> i64 {
        self.entries.iter().map(|(_, c)| c).sum()
    }
}
