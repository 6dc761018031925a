fn main() {
    afl::fuzz!(|data: &[u8]| trustmesh_fuzz::csr_and_svid(data));
}
